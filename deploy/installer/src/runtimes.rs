//! The handler table: which containerd runtime handler (the name a Kubernetes RuntimeClass
//! refers to) maps to which containerd `runtime_type`, and which engine's shim serves it.
//!
//! containerd turns a `runtime_type` of `io.containerd.<name>.<version>` into the shim binary
//! `containerd-shim-<name>-<version>`, looked up on its `PATH`; [`shim_binary_for`] does the same.

use thiserror::Error;

/// One runtime entry the installer can add to containerd's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// The engine whose shim serves this handler (what `--engines` selects).
    pub engine: &'static str,
    /// The CRI runtime handler name: the table name under `...containerd.runtimes` and the
    /// `handler` of the Kubernetes RuntimeClass.
    pub handler: &'static str,
    /// containerd's `runtime_type` for the handler.
    pub runtime_type: &'static str,
    /// Whether a release ships this handler: `make build` builds its shim and
    /// `deploy/runtimeclass.yaml` has its RuntimeClass. The installer configures a handler
    /// that is not shipped only where its shim is on the node.
    pub shipped: bool,
}

/// Every handler the installer knows. Adding a handler is one line here. Each engine has a
/// per-pod handler (`<engine>`) and a shared-manager handler (`<engine>-shared`), whose shim
/// is the same program under the name `containerd-shim-<engine>d-v1`.
pub const RUNTIMES: &[RuntimeSpec] = &[
    RuntimeSpec {
        engine: "wasmtime",
        handler: "wasmtime",
        runtime_type: "io.containerd.wasmtime.v1",
        shipped: true,
    },
    RuntimeSpec {
        engine: "wasmtime",
        handler: "wasmtime-shared",
        runtime_type: "io.containerd.wasmtimed.v1",
        shipped: true,
    },
    RuntimeSpec {
        engine: "wasmedge",
        handler: "wasmedge",
        runtime_type: "io.containerd.wasmedge.v1",
        shipped: true,
    },
    RuntimeSpec {
        engine: "wasmedge",
        handler: "wasmedge-shared",
        runtime_type: "io.containerd.wasmedged.v1",
        shipped: true,
    },
    // Not shipped yet (issue #16): `make build` builds no Wasmer shim, so the installer finds
    // none on a node; the e2e suite's `make wasmer` runs use these handlers.
    RuntimeSpec {
        engine: "wasmer",
        handler: "wasmer",
        runtime_type: "io.containerd.wasmer.v1",
        shipped: false,
    },
    RuntimeSpec {
        engine: "wasmer",
        handler: "wasmer-shared",
        runtime_type: "io.containerd.wasmerd.v1",
        shipped: false,
    },
];

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RuntimeError {
    #[error("unknown engine `{name}` (known engines: {known})")]
    UnknownEngine { name: String, known: String },
    #[error("runtime_type `{0}` is not of the form io.containerd.<name>.<version>")]
    BadRuntimeType(String),
}

impl RuntimeSpec {
    /// The shim binary containerd starts for this handler.
    pub fn shim_binary(&self) -> String {
        // The table holds only well-formed runtime types (checked by a unit test).
        shim_binary_for(self.runtime_type).unwrap_or_default()
    }
}

/// `io.containerd.wasmtime.v1` → `containerd-shim-wasmtime-v1`, as containerd resolves it.
pub fn shim_binary_for(runtime_type: &str) -> Result<String, RuntimeError> {
    let bad = || RuntimeError::BadRuntimeType(runtime_type.to_string());
    let rest = runtime_type
        .strip_prefix("io.containerd.")
        .ok_or_else(bad)?;
    let (name, version) = rest.rsplit_once('.').ok_or_else(bad)?;
    if name.is_empty() || version.is_empty() || name.contains('.') {
        return Err(bad());
    }
    Ok(format!("containerd-shim-{name}-{version}"))
}

/// The engine name of a shim file name: the engine of the table entry whose shim it is
/// (`containerd-shim-wasmtimed-v1` is wasmtime's), else the `<engine>` of the
/// `containerd-shim-<engine>-v1` form.
pub fn engine_of_shim_file(file_name: &str) -> Option<&str> {
    if let Some(spec) = RUNTIMES.iter().find(|spec| spec.shim_binary() == file_name) {
        return Some(spec.engine);
    }
    let engine = file_name
        .strip_prefix("containerd-shim-")?
        .strip_suffix("-v1")?;
    (!engine.is_empty()).then_some(engine)
}

/// Known engine names, in table order, without repeats.
pub fn known_engines() -> Vec<&'static str> {
    let mut engines: Vec<&'static str> = Vec::new();
    for spec in RUNTIMES {
        if !engines.contains(&spec.engine) {
            engines.push(spec.engine);
        }
    }
    engines
}

/// The handlers served by the given engines, in table order.
pub fn select<S: AsRef<str>>(engines: &[S]) -> Result<Vec<RuntimeSpec>, RuntimeError> {
    for engine in engines {
        let engine = engine.as_ref();
        if !RUNTIMES.iter().any(|spec| spec.engine == engine) {
            return Err(RuntimeError::UnknownEngine {
                name: engine.to_string(),
                known: known_engines().join(", "),
            });
        }
    }
    Ok(RUNTIMES
        .iter()
        .filter(|spec| engines.iter().any(|e| e.as_ref() == spec.engine))
        .copied()
        .collect())
}

/// The table entry for a handler name.
pub fn by_handler(handler: &str) -> Option<RuntimeSpec> {
    RUNTIMES
        .iter()
        .find(|spec| spec.handler == handler)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_entry_names_a_resolvable_shim() {
        for spec in RUNTIMES {
            let binary = shim_binary_for(spec.runtime_type).expect("well-formed runtime_type");
            assert!(binary.starts_with("containerd-shim-"), "{binary}");
            assert!(!spec.handler.is_empty());
        }
    }

    #[test]
    fn handlers_are_unique() {
        for (i, a) in RUNTIMES.iter().enumerate() {
            for b in &RUNTIMES[i + 1..] {
                assert_ne!(a.handler, b.handler);
            }
        }
    }

    #[test]
    fn shim_binary_follows_containerd_naming() {
        assert_eq!(
            shim_binary_for("io.containerd.wasmtime.v1").unwrap(),
            "containerd-shim-wasmtime-v1"
        );
        assert_eq!(
            shim_binary_for("io.containerd.wasmtimed.v1").unwrap(),
            "containerd-shim-wasmtimed-v1"
        );
        assert_eq!(
            shim_binary_for("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert!(shim_binary_for("wasmtime").is_err());
        assert!(shim_binary_for("io.containerd.v1").is_err());
        assert!(shim_binary_for("io.containerd.a.b.v1").is_err());
    }

    #[test]
    fn engine_of_shim_file_parses_names() {
        assert_eq!(
            engine_of_shim_file("containerd-shim-wasmtime-v1"),
            Some("wasmtime")
        );
        assert_eq!(
            engine_of_shim_file("containerd-shim-wasmedge-v1"),
            Some("wasmedge")
        );
        assert_eq!(
            engine_of_shim_file("containerd-shim-wasmtimed-v1"),
            Some("wasmtime")
        );
        assert_eq!(engine_of_shim_file("containerd-shim-runc-v2"), None);
        assert_eq!(engine_of_shim_file("containerd-shim--v1"), None);
        assert_eq!(engine_of_shim_file("wasmtime"), None);
    }

    #[test]
    fn select_keeps_table_order_and_rejects_unknown() {
        let picked = select(&["wasmedge", "wasmtime"]).unwrap();
        let handlers: Vec<_> = picked.iter().map(|s| s.handler).collect();
        assert_eq!(
            handlers,
            ["wasmtime", "wasmtime-shared", "wasmedge", "wasmedge-shared"]
        );
        assert_eq!(select(&["wasmtime"]).unwrap().len(), 2);
        let err = select(&["wamr"]).unwrap_err();
        assert!(
            err.to_string().contains("wasmtime, wasmedge, wasmer"),
            "{err}"
        );
    }

    #[test]
    fn by_handler_finds_entries() {
        assert_eq!(
            by_handler("wasmedge").map(|s| s.runtime_type),
            Some("io.containerd.wasmedge.v1")
        );
        assert_eq!(by_handler("runc"), None);
    }
}
