//! Runs a WASI module with WasmEdge in this process, outside any container:
//! `run-on-host MODULE [ARGS...]`. The benchmarks compare it with the same module run in a
//! container, to show what the container around the engine costs.

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: run-on-host MODULE [ARGS...]");
        std::process::exit(2);
    };
    let rest: Vec<String> = args.collect();
    let status = match wasmrunner_wasmedge::run_on_host(&path, &rest) {
        Ok(status) => status,
        Err(err) => err.report(wasmrunner_wasmedge::INFO.name),
    };
    std::process::exit(status);
}
