//! Compiling on the host is bounded: a module that takes too long or too much memory to
//! compile ends its compiling child, not the calling process, and the call returns an error
//! within the limit. A normal module compiles the same as without bounds.

use std::time::{Duration, Instant};

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;
use oci_spec::image::{Descriptor, MediaType};
use wasmrunner_shim::container::{BoundedCompiler, init_zygote};
use wasmrunner_shim::isolation::CompileLimits;
use wasmrunner_wasmtime::WasmtimeShim;

fn layer(bytes: Vec<u8>) -> WasmLayer {
    let digest: oci_spec::image::Digest =
        "sha256:0000000000000000000000000000000000000000000000000000000000000000"
            .parse()
            .expect("digest");
    WasmLayer {
        config: Descriptor::new(
            MediaType::Other("application/wasm".into()),
            bytes.len() as u64,
            digest,
        ),
        precompiled: false,
        layer: bytes,
    }
}

/// Many functions with long bodies: seconds of Cranelift work.
fn slow_module() -> Vec<u8> {
    let body: String = (0..200)
        .map(|i| format!("local.get 0 i64.const {i} i64.mul i64.const 7 i64.rem_u local.set 0\n"))
        .collect();
    let funcs: String = (0..4000)
        .map(|i| format!("(func $f{i} (param i64) (result i64) {body} local.get 0)\n"))
        .collect();
    wat::parse_str(format!(r#"(module (func (export "_start")) {funcs})"#)).expect("wat")
}

fn compile(
    limits: CompileLimits,
    bytes: Vec<u8>,
) -> (anyhow::Result<Vec<Option<Vec<u8>>>>, Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let result = runtime.block_on(async {
        let compiler = BoundedCompiler::<WasmtimeShim>::new(limits)
            .await
            .expect("wasmtime has a compiler");
        compiler.compile(&[layer(bytes)]).await
    });
    (result, started.elapsed())
}

fn main() {
    // Before any thread: the compiling children are forked from it.
    init_zygote();
    let mut failures = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if !ok {
            failures.push(format!("{name}: {detail}"));
        }
    };

    let small = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
    let (result, _) = compile(CompileLimits::default(), small);
    let compiled = matches!(&result, Ok(code) if matches!(code.as_slice(), [Some(bytes)] if !bytes.is_empty()));
    check(
        "a_module_compiles_within_the_limits",
        compiled,
        format!("{result:?}"),
    );

    let cpu = CompileLimits {
        cpu_seconds: 1,
        ..CompileLimits::default()
    };
    let (result, took) = compile(cpu, slow_module());
    let stopped = result
        .as_ref()
        .err()
        .is_some_and(|err| err.to_string().contains("WASMRUNNER_COMPILE_MAX_CPU_SECS"));
    check(
        "a_long_compile_is_stopped_at_its_cpu_limit",
        stopped && took < Duration::from_secs(30),
        format!("after {took:?}: {:?}", result.map(|code| code.len())),
    );

    let memory = CompileLimits {
        memory_bytes: 32 << 20,
        ..CompileLimits::default()
    };
    let (result, took) = compile(memory, slow_module());
    check(
        "a_compile_over_its_memory_limit_fails_alone",
        result.is_err(),
        format!("after {took:?}: {:?}", result.map(|code| code.len())),
    );

    let passed = 3 - failures.len();
    println!("\n{passed} passed, {} failed", failures.len());
    if !failures.is_empty() {
        for failure in &failures {
            eprintln!("{failure}");
        }
        std::process::exit(1);
    }
}
