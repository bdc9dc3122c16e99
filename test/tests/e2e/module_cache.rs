//! Compiled modules cached once per node: the first container of a rootfs module compiles it
//! into the cache, every container of it maps the cached code, and a module the container
//! sees differently from the image (a mount over it) is never mistaken for the cached one.
//! Engines without the cache (`Engine::NODE_MODULE_CACHE` missing from `--version`) must
//! leave it empty and run as before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};
use wasmrunner_e2e::command::Outcome;
use wasmrunner_e2e::engine::Engine;
use wasmrunner_e2e::fixtures::{self, Target};
use wasmrunner_e2e::images::{HELLO, TestImage, noop_module};
use wasmrunner_e2e::suite::{Attached, Needs};
use wasmrunner_e2e::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("compiled_once_and_mapped", compiled_once_and_mapped),
        Case::new("a_burst_compiles_once", a_burst_compiles_once),
        Case::new("artifact_code_is_mapped", artifact_code_is_mapped).needs(&[Needs::WasmLayers]),
        Case::new(
            "a_mount_over_the_module_is_not_the_cached_one",
            a_mount_over_the_module_is_not_the_cached_one,
        ),
    ]
}

const PROBE: TestImage = TestImage::Probe(Target::WasiP1);
const WAIT: Duration = Duration::from_secs(20);

fn uses_cache(env: &Env) -> Result<bool> {
    Ok(env
        .engine
        .features()?
        .iter()
        .any(|feature| feature == Engine::NODE_MODULE_CACHE))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cache's entries for the module with this sha256, under this engine and any cache key.
fn entries_for(env: &Env, sha256: &str) -> Vec<PathBuf> {
    // Each engine has its own folder; the suite's other engines share the containerd.
    let engine_dir = env.containerd.module_cache_dir().join(&env.engine.name);
    env.containerd
        .module_cache_entries()
        .into_iter()
        .filter(|entry| entry.starts_with(&engine_dir))
        .filter(|entry| entry.file_name().is_some_and(|name| name == sha256))
        .collect()
}

/// Two containers of one rootfs module: one cache entry, mapped by both (so its pages are
/// shared) where the engine maps cached code; without the cache feature, no entry at all.
fn compiled_once_and_mapped(env: &Env) -> Result<()> {
    let sha256 = sha256_hex(&fixtures::bytes("probe", Target::WasiP1)?);
    two_sleepers_map(env, PROBE, |_cache| {
        match entries_for(env, &sha256).as_slice() {
            [entry] => Ok(entry.to_string_lossy().into_owned()),
            entries => {
                anyhow::bail!("expected one cache entry for the probe module, found {entries:?}")
            }
        }
    })
}

/// Two containers of a runwasi artifact: the layer's precompiled code (from containerd's
/// content store) is put in the node cache and both map it (where the engine maps cached
/// code), instead of each getting a copy through the zygote; without the cache feature,
/// nothing is cached.
fn artifact_code_is_mapped(env: &Env) -> Result<()> {
    two_sleepers_map(env, TestImage::ProbeArtifact, |cache| {
        Ok(format!("{}/", cache.join(&env.engine.name).display()))
    })
}

/// Starts two sleeping containers of `image`. With the engine's cache, both must map a file
/// whose path has what `mapped` names (given the cache's folder); without it, the engine has
/// no folder in the cache. Both are stopped and removed either way.
fn two_sleepers_map(
    env: &Env,
    image: TestImage,
    mapped: impl Fn(&Path) -> Result<String>,
) -> Result<()> {
    let tasks = [
        env.start_attached(image, &["/probe.wasm", "sleep"])?,
        env.start_attached(image, &["/probe.wasm", "sleep"])?,
    ];
    let cache = env.containerd.module_cache_dir();
    let engine_dir = cache.join(&env.engine.name);
    let checked = if uses_cache(env)? {
        mapped(&cache).and_then(|entry| {
            if env.engine.maps_cached_code() {
                check_maps(env, &tasks, &entry)
            } else {
                check_cached(&entry)
            }
        })
    } else if engine_dir.exists() {
        Err(anyhow::anyhow!(
            "{} does not cache modules, yet {} exists",
            env.engine.name,
            engine_dir.display()
        ))
    } else {
        Ok(())
    };
    for task in tasks {
        task.kill_and_remove(env, WAIT)?;
    }
    checked
}

/// For an engine that loads a copy of the cached code (no [`Engine::MAPPED_CODE`]): the code
/// is in the cache, compiled once for the node (`entry` is a file, or a folder ending in `/`
/// that must hold something).
fn check_cached(entry: &str) -> Result<()> {
    let path = Path::new(entry);
    let found = if entry.ends_with('/') {
        std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_some())
    } else {
        path.is_file()
    };
    ensure!(found, "nothing cached at {entry}");
    Ok(())
}

/// Every task's process maps a file whose path has `entry`.
fn check_maps(env: &Env, tasks: &[Attached], entry: &str) -> Result<()> {
    for task in tasks {
        let pid = env.task_pid(&task.id)?;
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
            .with_context(|| format!("reading the maps of {pid}"))?;
        ensure!(
            maps.contains(entry),
            "container {} (pid {pid}) does not map the cached code {entry}:\n{maps}",
            task.id
        );
    }
    Ok(())
}

/// Four containers of a module the node has never seen, started at once: all run, and it
/// is compiled once (the others wait for that compile), whichever shims or managers serve
/// them: the shims' debug log names each compile.
fn a_burst_compiles_once(env: &Env) -> Result<()> {
    let image = TestImage::Noop;
    env.image(image)?;
    let outcomes: Vec<Result<Outcome>> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| env.run_rm(image, &[])))
            .collect();
        runs.into_iter()
            .map(|run| {
                run.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a ctr run thread panicked")))
            })
            .collect()
    });
    for outcome in outcomes {
        outcome?.ok()?;
    }
    let line = format!(
        "{}: compiled /noop.wasm ({})",
        env.engine.name,
        sha256_hex(&noop_module()?)
    );
    let expected = usize::from(uses_cache(env)?);
    // containerd copies the shims' log lines a moment after they are written.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut compiles = env.containerd.log_count(&line);
    while compiles < expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        compiles = env.containerd.log_count(&line);
    }
    ensure!(
        compiles == expected,
        "expected {expected} compile(s) of the noop module for {} on this node, the log has {compiles}",
        env.engine.name
    );
    Ok(())
}

/// A file mounted over the image's module is what the container runs: the cache holds the
/// image's module (the shim compiled it before the container's mounts existed), and the
/// container must notice the difference and compile what it sees.
fn a_mount_over_the_module_is_not_the_cached_one(env: &Env) -> Result<()> {
    // The image's own module first, so that the cache has it.
    env.run_rm(PROBE, &["/probe.wasm", "cat", "/data/greeting.txt"])?
        .ok()?;
    let hello = fixtures::path("hello", Target::WasiP1)?;
    let mount = format!(
        "type=bind,src={},dst=/probe.wasm,options=rbind:ro",
        hello.display()
    );
    let out = env
        .run_rm_with(PROBE, &["--mount", &mount], &["/probe.wasm"])?
        .ok()?;
    ensure!(
        out.stdout.trim_end() == HELLO,
        "the container ran something other than the module mounted over /probe.wasm: {out}"
    );
    Ok(())
}
