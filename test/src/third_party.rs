//! Programs other people wrote, as users bring them: released CLIs from crates.io, built for
//! `wasm32-wasip1` from their own published lock files (`cargo install --locked`), once per
//! machine, into `target/fixtures/third-party`. They are not shaped for the suites, so they
//! exercise WASI the way real programs do: their own argument parsing, directory walks, seeks,
//! configuration named by the environment, a terminal check on stdout, and their own exit
//! statuses.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, Result};

use crate::command::run_command;
use crate::fixtures;
use crate::paths::repo_root;

/// A released program: the crate that publishes it, the exact release, and the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Program {
    pub krate: &'static str,
    pub version: &'static str,
    pub bin: &'static str,
}

/// ripgrep (github.com/BurntSushi/ripgrep): walks directories, reads the config file its
/// environment names, prints matches one way to a terminal and another to a pipe, and exits 1
/// when nothing matches, 2 on an error.
pub const RIPGREP: Program = Program {
    krate: "ripgrep",
    version: "15.2.0",
    bin: "rg",
};

/// hexyl (github.com/sharkdp/hexyl): a hex viewer that seeks into the file it reads.
pub const HEXYL: Program = Program {
    krate: "hexyl",
    version: "0.17.0",
    bin: "hexyl",
};

/// Every third-party program the suites run, built together.
pub const PROGRAMS: [Program; 2] = [RIPGREP, HEXYL];

fn root() -> PathBuf {
    repo_root().join("target/fixtures/third-party")
}

static BUILT: OnceLock<Result<(), String>> = OnceLock::new();

/// Builds every program of [`PROGRAMS`] (once per process; `cargo install` finds the ones an
/// earlier run installed and leaves them).
pub fn build_all() -> Result<()> {
    fixtures::once(&BUILT, build)
}

/// The module of `program`, built first if need be ([`build_all`]).
pub fn bytes(program: Program) -> Result<Vec<u8>> {
    build_all()?;
    let path = root().join("bin").join(format!("{}.wasm", program.bin));
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

fn build() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut command = Command::new(cargo);
    command
        .args([
            "install",
            "--quiet",
            "--locked",
            "--target",
            "wasm32-wasip1",
        ])
        .arg("--root")
        .arg(root())
        .args(
            PROGRAMS
                .iter()
                .map(|program| format!("{}@{}", program.krate, program.version)),
        )
        // Kept between runs, so that a later run finds the build done.
        .env(
            "CARGO_TARGET_DIR",
            repo_root().join("target/fixtures/third-party-build"),
        )
        // Without debug info (ripgrep's release profile keeps some: 19 MB instead of 3 MB),
        // as such modules are shipped; the code is the release's own.
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "true")
        .env_remove("RUSTFLAGS");
    run_command(&mut command)?.ok().context(
        "building the third-party programs from crates.io (needs the crate registry and \
         `rustup target add wasm32-wasip1`)",
    )?;
    Ok(())
}
