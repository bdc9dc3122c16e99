//! The programs the suites run, compiled from `test/fixtures` once per run of the harness:
//! for `wasm32-wasip1` (modules), `wasm32-wasip2` (components) and the host (static ELF).
//!
//! The servers of `test/fixtures/http` ([`WASIP2_ONLY`]) are components only: they use
//! wasi:http and wasi:sockets, which neither preview 1 nor the host has. That package is a
//! member of the fixtures workspace that is built apart, for `wasm32-wasip2` alone, so its
//! dependency (the `wasip2` bindings) never reaches the other builds.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};

use crate::command::run_command;
use crate::paths::repo_root;

/// Which compilation of a fixture program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A core module for WASI preview 1.
    WasiP1,
    /// A component for WASI preview 2.
    WasiP2,
    /// A statically linked executable for this machine.
    Native,
}

impl Target {
    fn triple(self) -> &'static str {
        match self {
            Target::WasiP1 => "wasm32-wasip1",
            Target::WasiP2 => "wasm32-wasip2",
            Target::Native => "x86_64-unknown-linux-gnu",
        }
    }
}

fn fixtures_dir() -> PathBuf {
    repo_root().join("test/fixtures")
}

fn target_dir() -> PathBuf {
    repo_root().join("target/fixtures")
}

/// The programs of `test/fixtures/http`, built for [`Target::WasiP2`] only:
///
/// - `http-hello`: a wasi:http proxy, exporting `wasi:http/incoming-handler` and nothing
///   else (its routes are listed in `test/fixtures/http/src/lib.rs`)
/// - `http-hello-command`: the same handler in a command, which also exports `wasi:cli/run`
///   (its `run` prints `run called` and returns)
/// - `socket-server`: a command serving HTTP on `0.0.0.0:$PORT` with `std::net` (wasi:sockets)
pub const WASIP2_ONLY: &[&str] = &["http-hello", "http-hello-command", "socket-server"];

/// The programs of [`WASIP2_ONLY`] built as a library (a cdylib), whose file Cargo names
/// after the crate, with `_` for `-`.
const LIBRARIES: &[&str] = &["http-hello"];

static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds every fixture for each of its targets (once per process).
pub fn build_all() -> Result<()> {
    once(&BUILT, compile)
}

/// `build`'s outcome, from its one run in this process: every caller after the first gets the
/// same success or the same error.
pub(crate) fn once(built: &OnceLock<Result<(), String>>, build: fn() -> Result<()>) -> Result<()> {
    built
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn compile() -> Result<()> {
    let manifest = fixtures_dir().join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let wasm = run_command(
        Command::new(&cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .args(["-p", "wasmrunner-fixtures"])
            .args([
                "--target",
                Target::WasiP1.triple(),
                "--target",
                Target::WasiP2.triple(),
            ])
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("RUSTFLAGS"),
    )?;
    wasm.ok().context(
        "building the wasm fixtures (needs `rustup target add wasm32-wasip1 wasm32-wasip2`)",
    )?;
    let wasip2_only = run_command(
        Command::new(&cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .args(["-p", "wasmrunner-http-fixtures"])
            .args(["--target", Target::WasiP2.triple()])
            .env("CARGO_TARGET_DIR", target_dir())
            .env_remove("RUSTFLAGS"),
    )?;
    wasip2_only
        .ok()
        .context("building the wasm32-wasip2 fixtures of test/fixtures/http")?;
    let native = run_command(
        Command::new(&cargo)
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .args(["-p", "wasmrunner-fixtures"])
            .args(["--target", Target::Native.triple()])
            .env("CARGO_TARGET_DIR", target_dir())
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    native.ok().context("building the native fixtures")?;
    Ok(())
}

/// The path of fixture `program` (`hello`, `probe`, `pause`, `ignore-term`, or one of
/// [`WASIP2_ONLY`]) compiled for `target`.
pub fn path(program: &str, target: Target) -> Result<PathBuf> {
    if WASIP2_ONLY.contains(&program) && target != Target::WasiP2 {
        return Err(anyhow!(
            "fixture {program} is built for wasm32-wasip2 only, not {}",
            target.triple()
        ));
    }
    build_all()?;
    let file = match target {
        _ if LIBRARIES.contains(&program) => format!("{}.wasm", program.replace('-', "_")),
        Target::WasiP1 | Target::WasiP2 => format!("{program}.wasm"),
        Target::Native => program.to_string(),
    };
    let path = target_dir()
        .join(target.triple())
        .join("release")
        .join(file);
    if !path.is_file() {
        return Err(anyhow!("fixture {} was not built", path.display()));
    }
    Ok(path)
}

/// The bytes of fixture `program` compiled for `target`.
pub fn bytes(program: &str, target: Target) -> Result<Vec<u8>> {
    let path = path(program, target)?;
    read(&path)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// A module in WebAssembly text, compiled with the `wat` crate.
pub fn wat(text: &str) -> Result<Vec<u8>> {
    wat::parse_str(text).context("compiling a .wat fixture")
}
