//! The engines under test, in each mode, and what each one can run.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::paths::bin_dir;

/// Every engine wasmrunner ships, the default test matrix: a new engine is one line here
/// (and one crate under `engines/`). Wasmer (`engines/wasmer`, issue #16) is not shipped
/// yet and runs only when named: `make wasmer`, then `WASMRUNNER_ENGINES=wasmer`.
pub const ENGINES: &[&str] = &["wasmtime", "wasmedge"];

/// Engines with a shim that is not shipped yet (built by `make wasmer`), run only when named
/// or, by the bench, when their shim is beside the others.
pub const UNSHIPPED: &[&str] = &["wasmer"];

/// Who serves the Task API: one shim per pod, or one manager per engine and namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PerPod,
    Shared,
}

impl Mode {
    /// The modes named by `WASMRUNNER_MODES` (`per-pod`, `shared`; default both).
    pub fn selected() -> Vec<Mode> {
        let names = std::env::var("WASMRUNNER_MODES").unwrap_or_else(|_| "per-pod,shared".into());
        names
            .split(',')
            .filter_map(|name| match name.trim() {
                "per-pod" => Some(Mode::PerPod),
                "shared" => Some(Mode::Shared),
                _ => None,
            })
            .collect()
    }
}

/// One engine's shim in one mode, as containerd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `wasmtime`, `wasmedge`, ...
    pub name: String,
    pub mode: Mode,
}

impl Engine {
    pub fn new(name: &str, mode: Mode) -> Self {
        Self {
            name: name.to_string(),
            mode,
        }
    }

    /// The engines named by `WASMRUNNER_ENGINES` (default: every one of [`ENGINES`]), each in
    /// every mode of `WASMRUNNER_MODES`.
    pub fn selected() -> Vec<Engine> {
        let names = std::env::var("WASMRUNNER_ENGINES").unwrap_or_else(|_| ENGINES.join(","));
        let modes = Mode::selected();
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .flat_map(|name| modes.iter().map(move |mode| Engine::new(name, *mode)))
            .collect()
    }

    /// How cases and containers of this engine and mode are named: also the CRI runtime
    /// handler (`wasmtime`, `wasmtime-shared`).
    pub fn label(&self) -> String {
        match self.mode {
            Mode::PerPod => self.name.clone(),
            Mode::Shared => format!("{}-shared", self.name),
        }
    }

    /// The CRI runtime handler (the RuntimeClass's `handler`).
    pub fn handler(&self) -> String {
        self.label()
    }

    /// The runtime name given to `ctr run --runtime`.
    pub fn runtime(&self) -> String {
        match self.mode {
            Mode::PerPod => format!("io.containerd.{}.v1", self.name),
            Mode::Shared => format!("io.containerd.{}d.v1", self.name),
        }
    }

    pub fn binary_name(&self) -> String {
        match self.mode {
            Mode::PerPod => format!("containerd-shim-{}-v1", self.name),
            Mode::Shared => format!("containerd-shim-{}d-v1", self.name),
        }
    }

    pub fn binary(&self) -> Result<PathBuf> {
        let path = bin_dir().join(self.binary_name());
        if !path.is_file() {
            bail!(
                "{} is missing: build the shims first (`make build`), or point WASMRUNNER_BIN_DIR at them",
                path.display()
            );
        }
        Ok(path)
    }

    /// The shared manager's binary name, in shared mode.
    pub fn manager_binary(&self) -> Option<String> {
        (self.mode == Mode::Shared).then(|| self.binary_name())
    }

    /// What the shim binary says it can do: the `Features:` line of its `--version`.
    pub fn features(&self) -> Result<Vec<String>> {
        let binary = self.binary()?;
        let output = std::process::Command::new(&binary)
            .arg("--version")
            .output()?;
        let text = String::from_utf8_lossy(&output.stdout);
        let line = text
            .lines()
            .find_map(|line| line.trim().strip_prefix("Features:"))
            .ok_or_else(|| {
                anyhow::anyhow!("{} --version names no features:\n{text}", binary.display())
            })?;
        Ok(line.split(',').map(|f| f.trim().to_string()).collect())
    }

    /// The feature of engines that compile a rootfs module once per node and map it into
    /// each container (`wasmrunner_shim::module_cache::NODE_MODULE_CACHE`).
    pub const NODE_MODULE_CACHE: &'static str = "node-module-cache";

    /// Whether the shim compiles this engine's rootfs modules once per node (its `--version`
    /// lists [`Engine::NODE_MODULE_CACHE`]).
    pub fn has_node_module_cache(&self) -> bool {
        self.has_feature(Self::NODE_MODULE_CACHE)
    }

    /// The feature of engines whose containers map the node cache's code file (pages shared
    /// between containers; `wasmrunner_shim::module_cache::MAPPED_CODE`).
    pub const MAPPED_CODE: &'static str = "mapped-code";

    /// Whether this engine's containers map the cached code (its `--version` lists
    /// [`Engine::MAPPED_CODE`]) rather than load a copy of it.
    pub fn maps_cached_code(&self) -> bool {
        self.has_feature(Self::MAPPED_CODE)
    }

    /// Whether the shim's `--version` lists `feature` (false when it cannot be read).
    fn has_feature(&self, feature: &str) -> bool {
        self.features()
            .is_ok_and(|features| features.iter().any(|f| f == feature))
    }

    /// Whether this engine runs WASI preview 2 components.
    pub fn runs_components(&self) -> bool {
        self.name == "wasmtime"
    }

    /// What a container of `image` must print when this engine cannot run components: the
    /// case then asserts this error (exit status 126, "cannot execute") instead of output.
    pub const COMPONENT_REFUSAL: &'static str = "is a WebAssembly component (WASI preview 2)";

    /// The shim's fault injection (`wasmrunner_shim::container::FAULT_STARTUP_RACE`): a
    /// container with this in its env is built twice, as after libcontainer's start-up race.
    pub const FAULT_STARTUP_RACE: (&'static str, &'static str) =
        ("WASMRUNNER_FAULT_STARTUP_RACE", "1");

    /// What the shim logs for container `id` when it builds it again after that fault.
    pub fn rebuild_log_line(id: &str) -> String {
        format!("container {id}: received unexpected message: InitReady (injected")
    }

    /// Whether the shim's own log lines reach containerd's log: a per-pod shim's do; a
    /// manager's go to the log of the container that started it.
    pub fn logs_reach_containerd(&self) -> bool {
        self.mode == Mode::PerPod
    }
}
