use std::fmt;

use wasmrunner_capabilities::Key;

/// What an engine binary says about itself in `--version`.
#[derive(Debug, Clone, Copy)]
pub struct EngineInfo {
    /// The engine's short name, as used in the runtime name (`io.containerd.<name>.v1`).
    pub name: &'static str,
    /// The version of the engine library the binary was built with.
    pub engine_version: &'static str,
    /// What this build can run, one word each (for example `wasi-p1`, `wasi-p2`).
    pub features: &'static [&'static str],
    /// The capability keys (`wasmrunner_capabilities::Key`) this engine enforces; a policy
    /// that restricts any other is refused.
    pub capabilities: &'static [Key],
}

impl EngineInfo {
    /// The binary name containerd looks for on its `PATH` for runtime `io.containerd.<name>.v1`.
    pub fn binary_name(&self) -> String {
        format!("containerd-shim-{}-v1", self.name)
    }

    /// The containerd runtime name (`ctr run --runtime ...`).
    pub fn runtime_name(&self) -> String {
        format!("io.containerd.{}.v1", self.name)
    }

    /// The binary name of the shared-manager mode: the same program under a second name.
    pub fn shared_binary_name(&self) -> String {
        format!("containerd-shim-{}d-v1", self.name)
    }

    /// The runtime name of the shared-manager mode (`io.containerd.wasmtimed.v1`).
    pub fn shared_runtime_name(&self) -> String {
        format!("io.containerd.{}d.v1", self.name)
    }
}

/// Who serves the Task API for a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One shim process per pod (per container outside Kubernetes): containerd's default.
    PerPod,
    /// One long-lived manager process per engine and containerd namespace serves every pod.
    Shared,
}

impl Mode {
    /// The mode a binary runs in, from the name it was started under.
    pub fn of_binary(info: &EngineInfo, argv0: &std::ffi::OsStr) -> Self {
        let name = std::path::Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name == info.shared_binary_name() {
            Mode::Shared
        } else {
            Mode::PerPod
        }
    }
}

/// What runwasi's shim CLI prints for `-v` (`Shim::version`; of our binaries only the bench's
/// runwasi stand-in runs that CLI): wasmrunner's version, and no git revision. runwasi's
/// `version!()` gets one by running `git describe --dirty` while the crate compiles, which
/// rewrites `.git/index`; every later cargo call then found each engine that used it stale and
/// compiled it again (CI's unit step recompiled the engines after clippy, about a minute).
pub fn runwasi_version() -> containerd_shim_wasm::shim::Version {
    containerd_shim_wasm::shim::Version {
        version: env!("CARGO_PKG_VERSION"),
        revision: "<none>",
    }
}

/// The text printed by `--version`: one `key: value` line each, easy to read and to grep.
pub(crate) struct VersionReport<'a>(pub &'a EngineInfo);

impl fmt::Display for VersionReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.0;
        writeln!(f, "{}:", info.binary_name())?;
        writeln!(
            f,
            "  Runtime: {} (per-pod), {} (shared manager, as {})",
            info.runtime_name(),
            info.shared_runtime_name(),
            info.shared_binary_name()
        )?;
        writeln!(f, "  Version: {} (wasmrunner)", env!("CARGO_PKG_VERSION"))?;
        writeln!(f, "  Engine: {} {}", info.name, info.engine_version)?;
        writeln!(f, "  Features: {}", info.features.join(", "))?;
        let keys: Vec<&str> = info.capabilities.iter().map(|key| key.name()).collect();
        writeln!(
            f,
            "  Capabilities: {} (annotations {}<key>)",
            keys.join(", "),
            wasmrunner_capabilities::ANNOTATION_PREFIX
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_name_selects_the_mode() {
        let info = EngineInfo {
            name: "wasmtime",
            engine_version: "48.0.8",
            features: &[],
            capabilities: &[],
        };
        let mode = |name: &str| Mode::of_binary(&info, std::ffi::OsStr::new(name));
        assert_eq!(
            mode("/usr/local/bin/containerd-shim-wasmtimed-v1"),
            Mode::Shared
        );
        assert_eq!(mode("containerd-shim-wasmtime-v1"), Mode::PerPod);
        assert_eq!(mode("/opt/x/anything-else"), Mode::PerPod);
    }

    #[test]
    fn report_names_engine_version_and_features() {
        let info = EngineInfo {
            name: "wasmtime",
            engine_version: "48.0.8",
            features: &["wasi-p1", "wasi-p2"],
            capabilities: &[Key::Files, Key::Env],
        };
        let text = VersionReport(&info).to_string();
        assert!(text.starts_with("containerd-shim-wasmtime-v1:\n"), "{text}");
        assert!(
            text.contains(
                "  Runtime: io.containerd.wasmtime.v1 (per-pod), io.containerd.wasmtimed.v1 \
                 (shared manager, as containerd-shim-wasmtimed-v1)\n"
            ),
            "{text}"
        );
        assert!(text.contains("  Engine: wasmtime 48.0.8\n"), "{text}");
        assert!(text.contains("  Features: wasi-p1, wasi-p2\n"), "{text}");
        assert!(
            text.contains("  Capabilities: files, env (annotations wasmrunner.dev/<key>)\n"),
            "{text}"
        );
    }
}
