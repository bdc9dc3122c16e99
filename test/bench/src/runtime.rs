//! The runtimes compared: every engine wasmrunner ships in each of its modes
//! ([`wasmrunner_e2e::Engine::selected`]: `WASMRUNNER_ENGINES` and `WASMRUNNER_MODES` narrow
//! it), runc (the floor containerd sets), and runwasi's own shim on the same Wasmtime engine
//! (the cold-start baseline of `containerd-shim-runwasi-v1`).

use wasmrunner_e2e::engine::{Engine, Mode};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_oci::Flavour;

/// How long an idle shared manager stays up (the shim reads it; containerd passes its own
/// environment on to the shims it starts).
pub const MANAGER_IDLE_ENV: &str = "WASMRUNNER_MANAGER_IDLE_SECS";

/// runwasi's shim CLI with wasmrunner's Wasmtime engine (built from this crate).
pub const RUNWASI_BINARY: &str = "containerd-shim-runwasi-v1";

/// How many times fewer compute rounds an engine that interprets the probe runs, so that the
/// section stays short (WasmEdge interprets a `.wasm` file from a normal image: about 50x
/// slower than Wasmtime's compiled code).
pub const INTERPRETER_ROUNDS_DIVISOR: u64 = 50;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// `io.containerd.runc.v2` with static native programs: the baseline.
    Runc,
    /// One of wasmrunner's engines in one mode (`io.containerd.<engine>.v1`, per-pod, or
    /// `io.containerd.<engine>d.v1`, shared).
    Wasm(Engine),
    /// `io.containerd.runwasi.v1`: runwasi's shim CLI running wasmrunner's Wasmtime engine.
    Runwasi,
}

impl Runtime {
    /// Every wasmrunner engine in every mode, in the order of [`Engine::selected`].
    pub fn wasm() -> Vec<Runtime> {
        Engine::selected().into_iter().map(Runtime::Wasm).collect()
    }

    /// The order the sections measure them in: the baseline first, then every engine and mode.
    pub fn all() -> Vec<Runtime> {
        std::iter::once(Runtime::Runc).chain(Self::wasm()).collect()
    }

    /// The engine's name (`wasmtime`, `wasmedge`), `runc` or `runwasi`.
    pub fn engine_name(&self) -> &str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Wasm(engine) => &engine.name,
            Runtime::Runwasi => "runwasi",
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(
            self,
            Runtime::Wasm(Engine {
                mode: Mode::Shared,
                ..
            })
        )
    }

    /// The runtime name given to containerd.
    pub fn runtime_name(&self) -> String {
        match self {
            Runtime::Runc => "io.containerd.runc.v2".into(),
            Runtime::Wasm(engine) => engine.runtime(),
            Runtime::Runwasi => "io.containerd.runwasi.v1".into(),
        }
    }

    /// The shim binary containerd starts for it.
    pub fn shim_binary(&self) -> String {
        match self {
            Runtime::Runc => "containerd-shim-runc-v2".into(),
            Runtime::Wasm(engine) => engine.binary_name(),
            Runtime::Runwasi => RUNWASI_BINARY.into(),
        }
    }

    /// The key in the JSON report: `runc`, `runwasi`, `wasmtime_per_pod`, `wasmedge_shared`.
    pub fn key(&self) -> String {
        match self {
            Runtime::Runc => "runc".into(),
            Runtime::Runwasi => "runwasi".into(),
            Runtime::Wasm(engine) => format!("{}_{}", engine.name, mode_key(engine.mode)),
        }
    }

    /// A short tag for container ids and image names.
    pub fn tag(&self) -> String {
        match self {
            Runtime::Runc => "rc".into(),
            Runtime::Runwasi => "rw".into(),
            Runtime::Wasm(engine) => {
                let mode = match engine.mode {
                    Mode::PerPod => "pp",
                    Mode::Shared => "sh",
                };
                format!("{}-{mode}", engine.name)
            }
        }
    }

    /// `wasmtime per-pod`, `wasmedge shared`, `runc`, `runwasi`.
    pub fn label(&self) -> String {
        match self {
            Runtime::Runc => "runc".into(),
            Runtime::Runwasi => "runwasi (same wasmtime engine)".into(),
            Runtime::Wasm(engine) => format!("{} {}", engine.name, mode_label(engine.mode)),
        }
    }

    /// Whether the engine interprets a `.wasm` file from a normal image instead of compiling
    /// it (WasmEdge: it AOT-compiles only wasm-layer artifacts).
    pub fn interprets(&self) -> bool {
        self.engine_name() == "wasmedge"
    }

    /// Whether the engine AOT-compiles wasm-layer artifacts with LLVM (WasmEdge): minutes for
    /// a module of several MiB, where Cranelift takes seconds.
    pub fn compiles_with_llvm(&self) -> bool {
        self.engine_name() == "wasmedge"
    }

    /// The hello image: the wasip1 module in a normal OCI image, or the static native build.
    pub fn hello_image(&self) -> TestImage {
        match self {
            Runtime::Runc => TestImage::Hello(Target::Native, Flavour::Image),
            _ => TestImage::Hello(Target::WasiP1, Flavour::Image),
        }
    }

    /// The probe image and the path of the probe inside it.
    pub fn probe_image(&self) -> (TestImage, &'static str) {
        match self {
            Runtime::Runc => (TestImage::Probe(Target::Native), "/probe"),
            _ => (TestImage::Probe(Target::WasiP1), "/probe.wasm"),
        }
    }
}

pub fn mode_key(mode: Mode) -> &'static str {
    match mode {
        Mode::PerPod => "per_pod",
        Mode::Shared => "shared",
    }
}

pub fn mode_label(mode: Mode) -> &'static str {
    match mode {
        Mode::PerPod => "per-pod",
        Mode::Shared => "shared",
    }
}

/// The engines measured, in order, each once (whatever modes are selected).
pub fn engine_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for engine in Engine::selected() {
        if !names.contains(&engine.name) {
            names.push(engine.name);
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_names() {
        let shared = Runtime::Wasm(Engine::new("wasmedge", Mode::Shared));
        assert_eq!(shared.key(), "wasmedge_shared");
        assert_eq!(shared.runtime_name(), "io.containerd.wasmedged.v1");
        assert_eq!(shared.shim_binary(), "containerd-shim-wasmedged-v1");
        assert!(shared.is_shared() && shared.interprets());
        let per_pod = Runtime::Wasm(Engine::new("wasmtime", Mode::PerPod));
        assert_eq!(per_pod.label(), "wasmtime per-pod");
        assert!(!per_pod.is_shared() && !per_pod.interprets());
        assert_eq!(Runtime::Runwasi.runtime_name(), "io.containerd.runwasi.v1");
        assert_eq!(Runtime::Runwasi.shim_binary(), RUNWASI_BINARY);
    }
}
