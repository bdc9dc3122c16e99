//! Big modules: the first and second start of a module of 10 MiB or more of code, packaged as
//! a runwasi artifact (a wasm-typed layer), which the shim compiles on the first start and
//! stores in containerd's content store; later starts load the machine code.
//!
//! The module is generated: thousands of functions, each a long chain of memory loads,
//! multiplies and xors (no two alike, so Cranelift has real work), called once by `_start`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use wasmrunner_e2e::wasm_bytes::{leb_i32, leb_u32, name, section};
use wasmrunner_oci::{Flavour, ImageSpec};

use crate::bench::Bench;
use crate::report::SectionOutcome;
use crate::runtime::Runtime;
use crate::signals;

/// Load-multiply-xor groups per function (about 15 bytes each): functions of a few hundred
/// bytes, as compilers emit them (compile time per byte barely depends on it).
const GROUPS_PER_FUNCTION: usize = 25;

#[derive(Debug, Clone, Serialize)]
pub struct BigRuntime {
    pub image: String,
    pub module_bytes: usize,
    pub functions: usize,
    pub first_start_s: f64,
    pub second_start_s: f64,
    /// Whether containerd's content store held precompiled code for the module after the
    /// first start.
    pub precompiled_cached: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct BigModule {
    pub functions: usize,
    pub module_bytes: usize,
    /// Compiling the module in this process with the shim's engine configuration (not in a
    /// quick run).
    pub host_compile_s: Option<f64>,
    /// By runtime key (`wasmtime_per_pod`, `wasmedge_shared`, ...).
    pub runtimes: BTreeMap<String, BigRuntime>,
    /// Runtimes not measured, and why.
    pub skipped: BTreeMap<String, String>,
}

impl BigModule {
    pub fn get(&self, runtime: &Runtime) -> Option<&BigRuntime> {
        self.runtimes.get(&runtime.key())
    }
}

pub fn run(bench: &Bench) -> Result<SectionOutcome> {
    let version = bench.containerd().version;
    if !version.unpacks_wasm_layers() {
        return Ok(SectionOutcome::Skipped(format!(
            "containerd {version} cannot import images with wasm-typed layers (needs 1.6.25, 1.7.7 or 2.0)"
        )));
    }
    let target = bench.sizes.big_module_bytes;
    let _keeper = bench.keep_managers_alive()?;
    let mut runtimes = BTreeMap::new();
    let mut host_compile_s = None;
    let mut shape = (0, 0);
    // Compiling 10 MiB with Cranelift takes tens of seconds on a loaded 2-core machine: a
    // quick run measures each engine's per-pod mode only and leaves the host compile out.
    // WasmEdge's LLVM AOT compiler takes about 10 minutes for 10 MiB here (574 s, loaded
    // machine): it gets a module of `--big-module-aot-mib` (default 1 MiB), per-pod only,
    // and none in a quick run.
    let thorough = bench.sizes.big_module_thorough;
    let mut measured: Vec<Runtime> = Vec::new();
    let mut skipped = BTreeMap::new();
    // Upstream runwasi (per-pod only: it has no other mode) in a full run.
    let runwasi = Runtime::all().contains(&Runtime::Runwasi);
    let candidates = Runtime::wasm()
        .into_iter()
        .chain(runwasi.then_some(Runtime::Runwasi));
    for runtime in candidates {
        if runtime == Runtime::Runwasi && !thorough {
            skipped.insert(runtime.key(), "quick run: wasmrunner only".to_string());
        } else if runtime.compiles_with_llvm() && !thorough {
            skipped.insert(
                runtime.key(),
                "quick run: LLVM AOT compile of a big module takes minutes (default run only)"
                    .to_string(),
            );
        } else if runtime.compiles_with_llvm() && runtime.is_shared() {
            skipped.insert(
                runtime.key(),
                "LLVM AOT compile of a big module takes minutes: per-pod mode only".to_string(),
            );
        } else if !thorough && runtime.is_shared() {
            skipped.insert(runtime.key(), "quick run: per-pod mode only".to_string());
        } else {
            measured.push(runtime);
        }
    }
    for (seed, runtime) in measured.iter().enumerate() {
        signals::check()?;
        // A module of its own per runtime: the precompiled code is keyed by the module, and
        // both modes share the engine's cache label.
        let size = if runtime.compiles_with_llvm() {
            bench.sizes.big_module_aot_bytes
        } else {
            target
        };
        let module = generate(size, seed as u32 + 1);
        if shape == (0, 0) && size == target {
            shape = (module.functions, module.bytes.len());
        }
        eprintln!(
            "big module: {}: {} functions, {:.1} MiB",
            runtime.label(),
            module.functions,
            module.bytes.len() as f64 / (1 << 20) as f64
        );
        if host_compile_s.is_none() && thorough && runtime.engine_name() == "wasmtime" {
            let engine = crate::compute::new_engine()?;
            let started = Instant::now();
            wasmtime::Module::new(&engine, &module.bytes).map_err(
                crate::compute::wasmtime_error("compiling the generated module on the host"),
            )?;
            let seconds = started.elapsed().as_secs_f64();
            host_compile_s = Some(seconds);
            eprintln!("big module: {seconds:.2} s to compile on the host");
        }
        let name = format!("docker.io/wasmrunner/bench:big-{}", runtime.tag());
        let spec = ImageSpec::new(&name, Flavour::RunwasiArtifact)
            .file("/big.wasm", module.bytes.clone())
            .entrypoint(["/big.wasm"]);
        let image = bench.import_spec(&spec, true)?;
        let flags = ["--platform", "wasi/wasm"];
        let cached_before = precompiled_blobs(bench)?;
        let id = bench.id(&format!("big-{}", runtime.tag()));
        let (first, _) = bench.run_rm(runtime, &flags, &image, &id, &[])?;
        let precompiled_cached = precompiled_blobs(bench)? > cached_before;
        signals::check()?;
        let id = bench.id(&format!("big-{}", runtime.tag()));
        let (second, _) = bench.run_rm(runtime, &flags, &image, &id, &[])?;
        eprintln!(
            "big module: {}: first start {:.2} s, second {:.2} s",
            runtime.label(),
            first.as_secs_f64(),
            second.as_secs_f64()
        );
        runtimes.insert(
            runtime.key(),
            BigRuntime {
                image,
                module_bytes: module.bytes.len(),
                functions: module.functions,
                first_start_s: first.as_secs_f64(),
                second_start_s: second.as_secs_f64(),
                precompiled_cached,
            },
        );
        // The next runtime's module must not find this one's code.
        bench
            .ctr(&["images", "remove", &name])?
            .ok()
            .with_context(|| format!("removing {name}"))?;
    }
    Ok(SectionOutcome::BigModule(BigModule {
        functions: shape.0,
        module_bytes: shape.1,
        skipped,
        host_compile_s,
        runtimes,
    }))
}

/// How many blobs of the content store carry the shim's precompiled-code label
/// (`runwasi.io/precompiled/<engine>/<key>`).
fn precompiled_blobs(bench: &Bench) -> Result<usize> {
    let listing = bench.ctr(&["content", "ls"])?.ok()?;
    Ok(listing
        .stdout
        .lines()
        .filter(|line| line.contains("runwasi.io/precompiled"))
        .count())
}

pub struct Generated {
    pub bytes: Vec<u8>,
    pub functions: usize,
}

/// A valid module with at least `target` bytes of code: functions `(i32) -> i32` that each
/// fold loads from their argument's address into a running value, and `_start`, which calls
/// each once with address 0. `seed` changes every constant (and so the module's digest).
pub fn generate(target: usize, seed: u32) -> Generated {
    let mut bodies: Vec<Vec<u8>> = Vec::new();
    let mut code_len = 0;
    while code_len < target {
        let index = bodies.len() as u32;
        let body = function_body(index, seed);
        code_len += body.len() + 5;
        bodies.push(body);
    }
    let functions = bodies.len();
    // _start: for each function, `i32.const 0; call f; drop`.
    let mut start = vec![0x00]; // no locals
    for f in 0..functions as u32 {
        start.extend([0x41, 0x00, 0x10]);
        leb_u32(&mut start, f);
        start.push(0x1a);
    }
    start.push(0x0b);
    bodies.push(start);

    let mut module = b"\0asm\x01\0\0\0".to_vec();
    // Types: 0 = (i32) -> i32, 1 = () -> ().
    section(
        &mut module,
        1,
        &[0x02, 0x60, 0x01, 0x7f, 0x01, 0x7f, 0x60, 0x00, 0x00],
    );
    let mut funcs = Vec::new();
    leb_u32(&mut funcs, functions as u32 + 1);
    funcs.extend(std::iter::repeat_n(0x00, functions));
    funcs.push(0x01);
    section(&mut module, 3, &funcs);
    // One memory of one page.
    section(&mut module, 5, &[0x01, 0x00, 0x01]);
    let mut exports = vec![0x02];
    name(&mut exports, "memory");
    exports.extend([0x02, 0x00]);
    name(&mut exports, "_start");
    exports.push(0x00);
    leb_u32(&mut exports, functions as u32);
    section(&mut module, 7, &exports);
    let mut code = Vec::with_capacity(code_len + 64);
    leb_u32(&mut code, bodies.len() as u32);
    for body in &bodies {
        leb_u32(&mut code, body.len() as u32);
        code.extend_from_slice(body);
    }
    section(&mut module, 10, &code);
    Generated {
        bytes: module,
        functions,
    }
}

/// `(local i32)`, then per group: `local.get 0; i32.load offset=K; local.get 1; i32.xor;
/// i32.const C; i32.mul; local.set 1`, then `local.get 1; end`.
fn function_body(index: u32, seed: u32) -> Vec<u8> {
    let mut body = vec![0x01, 0x01, 0x7f];
    let mut state = (index.wrapping_mul(0x9e37_79b9) ^ seed.wrapping_mul(0x85eb_ca6b)) | 1;
    for group in 0..GROUPS_PER_FUNCTION as u32 {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        // Aligned offsets inside the one 64 KiB page (the argument is 0).
        let offset = (index.wrapping_mul(7919).wrapping_add(group) % 16_383) * 4;
        body.extend([0x20, 0x00, 0x28, 0x02]);
        leb_u32(&mut body, offset);
        body.extend([0x20, 0x01, 0x73, 0x41]);
        leb_i32(&mut body, (state & 0x000f_ffff) as i32 | 1);
        body.extend([0x6c, 0x21, 0x01]);
    }
    body.extend([0x20, 0x01, 0x0b]);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_module_is_valid_and_big_enough() -> Result<()> {
        let module = generate(1 << 20, 1);
        assert!(module.bytes.len() >= 1 << 20);
        let engine = crate::compute::new_engine()?;
        wasmtime::Module::validate(&engine, &module.bytes)
            .map_err(crate::compute::wasmtime_error("validating"))?;
        // Another seed, another module of the same shape.
        let other = generate(1 << 20, 2);
        assert_eq!(other.functions, module.functions);
        assert_ne!(other.bytes, module.bytes);
        Ok(())
    }

    #[test]
    fn the_generated_module_runs() -> Result<()> {
        let error = crate::compute::wasmtime_error;
        let module = generate(64 << 10, 3);
        let engine = crate::compute::new_engine()?;
        let module = wasmtime::Module::new(&engine, &module.bytes).map_err(error("compiling"))?;
        let mut store = crate::compute::shim_store(&engine, ());
        let instance =
            wasmtime::Instance::new(&mut store, &module, &[]).map_err(error("instantiating"))?;
        let start = instance
            .get_typed_func::<(), ()>(&mut store, "_start")
            .map_err(error("_start"))?;
        start.call(&mut store, ()).map_err(error("running"))?;
        Ok(())
    }
}
