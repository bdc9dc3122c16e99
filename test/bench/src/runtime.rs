//! The runtimes compared: every engine wasmrunner ships in each of its modes
//! ([`wasmrunner_e2e::Engine::selected`]: `WASMRUNNER_ENGINES` and `WASMRUNNER_MODES` narrow
//! it), runc (the floor containerd sets for native programs), upstream runwasi's own Wasmtime
//! shim (the baseline wasmrunner is measured against), runwasi's shim CLI around wasmrunner's
//! engine (the earlier stand-in, a second column), and the null shim (the floor for any
//! shim: it answers the Task API and runs nothing).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmrunner_e2e::engine::{Engine, Mode, UNSHIPPED};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_e2e::paths::{bin_dir, repo_root};
use wasmrunner_oci::Flavour;

/// How long an idle shared manager stays up (the shim reads it; containerd passes its own
/// environment on to the shims it starts).
pub const MANAGER_IDLE_ENV: &str = "WASMRUNNER_MANAGER_IDLE_SECS";

/// Upstream runwasi's Wasmtime shim, as the bench puts it on containerd's path (a copy of
/// [`upstream_runwasi`]).
pub const RUNWASI_BINARY: &str = "containerd-shim-runwasi-v1";

/// Where upstream runwasi's shim is taken from, when set (else [`RUNWASI_DEFAULT`]).
pub const RUNWASI_ENV: &str = "WASMRUNNER_BENCH_RUNWASI";

/// Upstream runwasi's shim as the machines carry it, relative to the repository.
pub const RUNWASI_DEFAULT: &str = "../shared/anchors/runwasi/containerd-shim-wasmtime-v1";

/// runwasi's shim CLI with wasmrunner's Wasmtime engine (built from this crate).
pub const STANDIN_BINARY: &str = "containerd-shim-runwasi-standin-v1";

/// The null shim (built from this crate), and its shared name (a hard link the bench makes).
pub const NULL_BINARY: &str = "containerd-shim-null-v1";
pub const NULL_SHARED_BINARY: &str = "containerd-shim-nulld-v1";

/// How many times fewer compute rounds an engine that interprets the probe runs, so that the
/// section stays short (WasmEdge interprets a `.wasm` file from a normal image: about 50x
/// slower than Wasmtime's compiled code).
pub const INTERPRETER_ROUNDS_DIVISOR: u64 = 50;

/// Upstream runwasi's shim: `path` when given, else `WASMRUNNER_BENCH_RUNWASI`, else
/// [`RUNWASI_DEFAULT`].
pub fn upstream_runwasi(path: Option<&Path>) -> PathBuf {
    path.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(RUNWASI_ENV).map(PathBuf::from))
        .unwrap_or_else(|| repo_root().join(RUNWASI_DEFAULT))
}

/// Puts the baselines on containerd's path (the directory of the built shims): upstream
/// runwasi's shim copied as [`RUNWASI_BINARY`] (a copy, not a link: it re-executes
/// `/proc/self/exe`, and through a link its serving processes would carry the name of
/// wasmrunner's own Wasmtime shim), and the null shim's shared name. Returns why upstream
/// runwasi is not measured, when it is not.
pub fn install_baselines(upstream: &Path) -> Result<Option<String>> {
    let dir = bin_dir();
    let null = dir.join(NULL_BINARY);
    if null.is_file() {
        let shared = dir.join(NULL_SHARED_BINARY);
        let _ = std::fs::remove_file(&shared);
        std::fs::hard_link(&null, &shared)
            .with_context(|| format!("linking {} to {}", shared.display(), null.display()))?;
    }
    let copy = dir.join(RUNWASI_BINARY);
    let _ = std::fs::remove_file(&copy);
    if !upstream.is_file() {
        return Ok(Some(format!(
            "upstream runwasi's shim is not at {} (give its path with --runwasi or {RUNWASI_ENV})",
            upstream.display()
        )));
    }
    std::fs::copy(upstream, &copy)
        .with_context(|| format!("copying {} to {}", upstream.display(), copy.display()))?;
    Ok(None)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runtime {
    /// `io.containerd.runc.v2` with static native programs: the baseline.
    Runc,
    /// One of wasmrunner's engines in one mode (`io.containerd.<engine>.v1`, per-pod, or
    /// `io.containerd.<engine>d.v1`, shared).
    Wasm(Engine),
    /// `io.containerd.runwasi.v1`: upstream runwasi's own Wasmtime shim, unchanged.
    Runwasi,
    /// `io.containerd.runwasi-standin.v1`: runwasi's shim CLI running wasmrunner's Wasmtime
    /// engine.
    RunwasiStandIn,
    /// `io.containerd.null.v1` (a process per task) or `io.containerd.nulld.v1` (one process
    /// for every task): answers the Task API and runs nothing.
    Null(Mode),
}

impl Runtime {
    /// Every wasmrunner engine in every mode, in the order of [`engines`].
    pub fn wasm() -> Vec<Runtime> {
        engines().into_iter().map(Runtime::Wasm).collect()
    }

    /// What every section measures, in order: runc, every engine and mode, then upstream
    /// runwasi when the bench could put it on containerd's path.
    pub fn all() -> Vec<Runtime> {
        let runwasi = bin_dir().join(RUNWASI_BINARY).is_file();
        std::iter::once(Runtime::Runc)
            .chain(Self::wasm())
            .chain(runwasi.then_some(Runtime::Runwasi))
            .collect()
    }

    /// The floors for sections that run short tasks (cold start, throughput): the null shim
    /// in both modes, when built.
    pub fn floors() -> Vec<Runtime> {
        let dir = bin_dir();
        [Mode::PerPod, Mode::Shared]
            .into_iter()
            .map(Runtime::Null)
            .filter(|r| dir.join(r.shim_binary()).is_file())
            .collect()
    }

    /// [`Runtime::all`] and the floors.
    pub fn all_and_floors() -> Vec<Runtime> {
        Self::all().into_iter().chain(Self::floors()).collect()
    }

    /// The null shim: a floor, which runs nothing.
    pub fn is_null(&self) -> bool {
        matches!(self, Runtime::Null(_))
    }

    /// The engine's name (`wasmtime`, `wasmedge`), `runc`, `runwasi` or `null`.
    pub fn engine_name(&self) -> &str {
        match self {
            Runtime::Runc => "runc",
            Runtime::Wasm(engine) => &engine.name,
            Runtime::Runwasi => "runwasi",
            Runtime::RunwasiStandIn => "runwasi-standin",
            Runtime::Null(_) => "null",
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(
            self,
            Runtime::Wasm(Engine {
                mode: Mode::Shared,
                ..
            }) | Runtime::Null(Mode::Shared)
        )
    }

    /// The runtime name given to containerd.
    pub fn runtime_name(&self) -> String {
        match self {
            Runtime::Runc => "io.containerd.runc.v2".into(),
            Runtime::Wasm(engine) => engine.runtime(),
            Runtime::Runwasi => "io.containerd.runwasi.v1".into(),
            Runtime::RunwasiStandIn => "io.containerd.runwasi-standin.v1".into(),
            Runtime::Null(Mode::PerPod) => "io.containerd.null.v1".into(),
            Runtime::Null(Mode::Shared) => "io.containerd.nulld.v1".into(),
        }
    }

    /// The shim binary containerd starts for it.
    pub fn shim_binary(&self) -> String {
        match self {
            Runtime::Runc => "containerd-shim-runc-v2".into(),
            Runtime::Wasm(engine) => engine.binary_name(),
            Runtime::Runwasi => RUNWASI_BINARY.into(),
            Runtime::RunwasiStandIn => STANDIN_BINARY.into(),
            Runtime::Null(Mode::PerPod) => NULL_BINARY.into(),
            Runtime::Null(Mode::Shared) => NULL_SHARED_BINARY.into(),
        }
    }

    /// The key in the JSON report: `runc`, `runwasi`, `runwasi_standin`, `null_per_pod`,
    /// `wasmtime_per_pod`, `wasmedge_shared`.
    pub fn key(&self) -> String {
        match self {
            Runtime::Runc => "runc".into(),
            Runtime::Runwasi => "runwasi".into(),
            Runtime::RunwasiStandIn => "runwasi_standin".into(),
            Runtime::Null(mode) => format!("null_{}", mode_key(*mode)),
            Runtime::Wasm(engine) => format!("{}_{}", engine.name, mode_key(engine.mode)),
        }
    }

    /// A short tag for container ids and image names.
    pub fn tag(&self) -> String {
        match self {
            Runtime::Runc => "rc".into(),
            Runtime::Runwasi => "rw".into(),
            Runtime::RunwasiStandIn => "rws".into(),
            Runtime::Null(Mode::PerPod) => "nu-pp".into(),
            Runtime::Null(Mode::Shared) => "nu-sh".into(),
            Runtime::Wasm(engine) => {
                let mode = match engine.mode {
                    Mode::PerPod => "pp",
                    Mode::Shared => "sh",
                };
                format!("{}-{mode}", engine.name)
            }
        }
    }

    /// `wasmtime per-pod`, `wasmedge shared`, `runc`, `runwasi`, `null shim per-pod`.
    pub fn label(&self) -> String {
        match self {
            Runtime::Runc => "runc".into(),
            Runtime::Runwasi => "runwasi (upstream)".into(),
            Runtime::RunwasiStandIn => "runwasi stand-in (runwasi CLI, our wasmtime engine)".into(),
            Runtime::Null(mode) => format!("null shim {}", mode_label(*mode)),
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
            // The null shim runs nothing: any image will do.
            Runtime::Runc | Runtime::Null(_) => TestImage::Hello(Target::Native, Flavour::Image),
            _ => TestImage::Hello(Target::WasiP1, Flavour::Image),
        }
    }

    /// The probe image and the path of the probe inside it.
    pub fn probe_image(&self) -> (TestImage, &'static str) {
        match self {
            Runtime::Runc | Runtime::Null(_) => (TestImage::Probe(Target::Native), "/probe"),
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

/// The engines measured, in each selected mode: [`Engine::selected`], and when
/// `WASMRUNNER_ENGINES` does not choose, an unshipped engine too (Wasmer) once `make wasmer`
/// has put its shims beside the others.
pub fn engines() -> Vec<Engine> {
    let mut engines = Engine::selected();
    if std::env::var_os("WASMRUNNER_ENGINES").is_none() {
        for name in UNSHIPPED {
            let built: Vec<Engine> = Mode::selected()
                .into_iter()
                .map(|mode| Engine::new(name, mode))
                .collect();
            if built.iter().all(|engine| engine.binary().is_ok()) {
                engines.extend(built);
            }
        }
    }
    engines
}

/// The engines measured, in order, each once (whatever modes are selected).
pub fn engine_names() -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for engine in engines() {
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
        // containerd finds a shim by the runtime name's last two parts.
        for runtime in [
            Runtime::RunwasiStandIn,
            Runtime::Null(Mode::PerPod),
            Runtime::Null(Mode::Shared),
        ] {
            let name = runtime.runtime_name();
            let parts: Vec<&str> = name.rsplitn(3, '.').collect();
            assert_eq!(
                runtime.shim_binary(),
                format!("containerd-shim-{}-{}", parts[1], parts[0])
            );
        }
        assert!(Runtime::Null(Mode::Shared).is_shared());
    }
}
