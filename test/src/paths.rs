//! Where things are: the repository, the binaries under test, the harness's scratch space.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The repository root (this crate lives in `<root>/test`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The folder holding the shim binaries under test.
pub fn bin_dir() -> PathBuf {
    match std::env::var_os("WASMRUNNER_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => repo_root().join("target/release"),
    }
}

/// A fresh scratch folder for one run of the suite, under `target/e2e`. Kept on failure
/// for inspection; the harness removes it after a clean run.
pub fn scratch_dir(label: &str) -> Result<tempfile::TempDir> {
    let parent = repo_root().join("target/e2e");
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    tempfile::Builder::new()
        .prefix(&format!("{label}-"))
        .tempdir_in(&parent)
        .with_context(|| format!("creating a scratch dir in {}", parent.display()))
}
