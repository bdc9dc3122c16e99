//! The engines under test and what each one can run.

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::paths::bin_dir;

/// One engine's shim, as containerd sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Engine {
    /// `wasmtime`, `wasmedge`, ...
    pub name: String,
}

impl Engine {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
        }
    }

    /// The engines named by `WASMRUNNER_ENGINES` (default: wasmtime).
    pub fn selected() -> Vec<Engine> {
        let names = std::env::var("WASMRUNNER_ENGINES").unwrap_or_else(|_| "wasmtime".into());
        names
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(Engine::new)
            .collect()
    }

    /// The runtime name given to `ctr run --runtime`.
    pub fn runtime(&self) -> String {
        format!("io.containerd.{}.v1", self.name)
    }

    pub fn binary_name(&self) -> String {
        format!("containerd-shim-{}-v1", self.name)
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

    /// Whether this engine runs WASI preview 2 components.
    pub fn runs_components(&self) -> bool {
        self.name == "wasmtime"
    }
}
