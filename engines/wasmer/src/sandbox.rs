//! Runs one workload inside the container's init process.

use std::io::Read;

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use wasmer::{ExternType, Module, RuntimeError, Store};
use wasmer_wasix::{WasiEnv, WasiError};
use wasmrunner_shim::capabilities::Capabilities;
use wasmrunner_shim::{EngineInfo, RunWorkload, Workload, WorkloadError, WorkloadKind};

use crate::engine::{INFO, new_engine};
use crate::files::GrantedFiles;
use crate::stdio;

/// The one import namespace the guest gets: WASI preview 1, as on the other engines.
const WASI_P1: &str = "wasi_snapshot_preview1";

#[derive(Default)]
pub struct WasmerSandbox;

impl RunWorkload for WasmerSandbox {
    const ENGINE: EngineInfo = INFO;

    async fn run_workload(&self, workload: Workload<'_>) -> Result<i32, WorkloadError> {
        run(workload)
    }
}

/// runwasi's entry point: the workload as runwasi describes it, with the default
/// capabilities and no node cache (wasmrunner's own init process calls `run_workload`).
impl Sandbox for WasmerSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let outcome =
            Workload::load(ctx, None, Capabilities::default(), Default::default()).and_then(run);
        Ok(outcome.unwrap_or_else(|err| err.report(INFO.name)))
    }

    /// Accepts every non-native entrypoint: what is wrong with one is reported when it runs,
    /// on the container's stderr, where the user looks.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Runs a module from the host ([`Workload::on_host`]) in this process, outside any
/// container: the same engine configuration and code path a container uses, for comparing
/// the engine with and without the container around it (see `examples/run-on-host.rs`).
pub fn run_on_host(workload: Workload<'static>) -> Result<i32, WorkloadError> {
    run(workload)
}

fn run(mut workload: Workload<'_>) -> Result<i32, WorkloadError> {
    if workload.kind == WorkloadKind::Component {
        return Err(WorkloadError::components_unsupported(
            &workload.name,
            "Wasmer",
        ));
    }
    let engine = new_engine(workload.capabilities.memory_pages());
    let module = load(&engine, &mut workload)?;
    check_imports(&workload, &module)?;
    check_entrypoint(&workload, &module)?;
    // The guest runs on a thread of its own: WASIX's filesystem and clocks need a Tokio
    // runtime of their own, made, entered and dropped outside the init process's runtime.
    std::thread::scope(|scope| {
        let guest = std::thread::Builder::new()
            .name("guest".to_string())
            .spawn_scoped(scope, || run_on_wasix_runtime(&engine, module, &workload));
        match guest {
            Ok(guest) => guest.join().unwrap_or_else(|panic| {
                Err(WorkloadError::Load {
                    what: workload.name.clone(),
                    reason: format!(
                        "Wasmer panicked: {}",
                        wasmrunner_shim::panic_reason(&*panic)
                    ),
                })
            }),
            Err(e) => Err(WorkloadError::Load {
                what: workload.name.clone(),
                reason: format!("cannot start the guest's thread: {e}"),
            }),
        }
    })
}

/// One worker is enough for a guest that has no threads or sockets. The guest runs on the
/// calling thread, inside the runtime's context but not on it, as WASIX expects of a blocking
/// call. Dropping the runtime at the end waits for what WASIX still writes to stdout and
/// stderr (Tokio hands each write to its blocking pool), so no output is lost at exit.
fn run_on_wasix_runtime(
    engine: &wasmer::Engine,
    module: Module,
    workload: &Workload<'_>,
) -> Result<i32, WorkloadError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("cannot start Wasmer's runtime: {e}"),
        })?;
    let status = {
        let _context = runtime.enter();
        run_module(engine, module, workload)
    };
    drop(runtime);
    status
}

/// The module's code: the node cache's or a precompiled layer's serialized code when the
/// shim offers it and it loads, else compiled here.
fn load(engine: &wasmer::Engine, workload: &mut Workload<'_>) -> Result<Module, WorkloadError> {
    let load_error = |reason: String| WorkloadError::Load {
        what: workload.name.clone(),
        reason,
    };
    let compiled = workload.compiled.take();
    match (compiled, workload.kind) {
        (Some(file), WorkloadKind::Precompiled) => {
            let bytes = read_all(file)
                .map_err(|e| load_error(format!("reading the precompiled code: {e}")))?;
            deserialize(engine, &bytes).map_err(load_error)
        }
        (None, WorkloadKind::Precompiled) => {
            deserialize(engine, &workload.bytes).map_err(load_error)
        }
        (compiled, _) => {
            let cached = compiled
                .and_then(|file| read_all(file).ok())
                .and_then(|bytes| {
                    deserialize(engine, &bytes)
                        .inspect_err(|e| tracing::debug!("not using the node's compiled code: {e}"))
                        .ok()
                });
            match cached {
                Some(module) => Ok(module),
                None => Module::new(engine, &workload.bytes).map_err(|e| load_error(e.to_string())),
            }
        }
    }
}

fn read_all(mut file: std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn deserialize(engine: &wasmer::Engine, bytes: &[u8]) -> Result<Module, String> {
    // SAFETY: serialized code reaches a container only from the shim: the node cache's file,
    // written by the shim (as root, in a directory only root can write) with the output of
    // `WasmerCompiler::compile` under this engine's cache key, for the module whose sha256
    // the shim checked against the one this container runs; or a precompiled layer from
    // containerd's content store, under a label runwasi writes with that same output and
    // key. Wasmer also checks the header, its version and the target. An image cannot bring
    // its own: a layer is precompiled only when its label names this engine's key.
    unsafe { Module::deserialize(engine, bytes) }.map_err(|e| e.to_string())
}

/// The guest gets WASI preview 1 and nothing else: an import from any other module (WASIX's
/// processes, sockets and threads among them) is refused, named, before anything runs, in the
/// words WasmEdge's shim uses for the same refusal.
fn check_imports(workload: &Workload<'_>, module: &Module) -> Result<(), WorkloadError> {
    let foreign: Vec<String> = module
        .imports()
        .filter(|import| import.module() != WASI_P1)
        .map(|import| {
            format!(
                "{}::{} is from a module this runtime does not provide (it provides {WASI_P1} \
                 only; Wasmer's WASIX extensions are not offered)",
                import.module(),
                import.name()
            )
        })
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("unknown import: {}", foreign.join("; ")),
    })
}

/// The function to call must exist and take no parameters, as `_start` does.
fn check_entrypoint(workload: &Workload<'_>, module: &Module) -> Result<(), WorkloadError> {
    let missing = |reason: String| WorkloadError::MissingExport {
        what: workload.name.clone(),
        func: workload.function.clone(),
        reason,
    };
    let export = module
        .exports()
        .find(|export| export.name() == workload.function);
    match export.as_ref().map(|export| export.ty()) {
        Some(ExternType::Function(ty)) if ty.params().is_empty() => Ok(()),
        Some(ExternType::Function(ty)) => Err(missing(format!(
            "it takes {} parameters; an entrypoint takes none",
            ty.params().len()
        ))),
        Some(_) => Err(missing("the export is not a function".to_string())),
        None => Err(missing(
            "no function is exported under that name".to_string(),
        )),
    }
}

/// Instantiates the module with WASI preview 1 and calls the entrypoint. Runs on the guest's
/// thread, inside the Tokio runtime's context.
fn run_module(
    engine: &wasmer::Engine,
    module: Module,
    workload: &Workload<'_>,
) -> Result<i32, WorkloadError> {
    let mut store = Store::new(engine.clone());
    if module.imports().next().is_none() {
        // Nothing to link: WASI (which needs the module's memory) is left out, as a module
        // without imports cannot call it.
        let instance = wasmer::Instance::new(&mut store, &module, &wasmer::imports! {})
            .map_err(|e| instance_error(workload, e))?;
        let entrypoint = entrypoint_of(workload, &instance)?;
        workload.ready_to_run();
        return match entrypoint.call(&mut store, &[]) {
            Ok(_) => Ok(0),
            Err(err) => exit_status(workload, err),
        };
    }
    // The guest's filesystem is its grant's directories and nothing else (see files.rs);
    // WASIX preopens them in it, under the guest's names.
    let files = GrantedFiles::open(
        tokio::runtime::Handle::current(),
        &workload.capabilities.files,
    )
    .map_err(|e| WorkloadError::Policy(format!("Wasmer cannot open a granted directory: {e}")))?;
    let program = workload.args.first().cloned().unwrap_or_default();
    let mut builder = WasiEnv::builder(program)
        .engine(engine.clone())
        .args(workload.args.iter().skip(1))
        .envs(workload.env.iter().map(|(name, value)| (name, value)))
        .fs(std::sync::Arc::new(files) as std::sync::Arc<_>);
    for preopen in &workload.capabilities.files.0 {
        builder
            .add_preopen_build(|dir| {
                let dir = dir
                    .directory(&preopen.path)
                    .read(true)
                    .write(preopen.writable)
                    .create(preopen.writable);
                if preopen.guest == preopen.path {
                    dir
                } else {
                    dir.alias(&preopen.guest)
                }
            })
            .map_err(|e| WorkloadError::Policy(format!("Wasmer cannot preopen {preopen}: {e}")))?;
    }
    // WASIX's own `instantiate` links its imports as they are; this is the same steps with
    // one import wrapped (see stdio.rs). A link error, a memory over the cap or a trapping
    // start function is `Instance::new`'s error, said as the other engines say it.
    let wasi_error = |e: &dyn std::fmt::Display| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("cannot set up WASI: {e}"),
    };
    let mut wasi = builder.finalize(&mut store).map_err(|e| wasi_error(&e))?;
    let mut imports = wasi
        .import_object(&mut store, &module)
        .map_err(|e| wasi_error(&e))?;
    let stdio = stdio::wrap_fdstat(&mut store, &mut imports);
    let instance = wasmer::Instance::new(&mut store, &module, &imports)
        .map_err(|e| instance_error(workload, e))?;
    if let Some(stdio) = &stdio {
        stdio::give_memory(&mut store, stdio, &instance);
    }
    wasi.initialize(&mut store, instance.clone())
        .map_err(|e| wasi_error(&e))?;
    let entrypoint = entrypoint_of(workload, &instance)?;
    workload.ready_to_run();
    let outcome = entrypoint.call(&mut store, &[]);
    let status = match outcome {
        Ok(_) => Ok(0),
        Err(err) => exit_status(workload, err),
    };
    wasi.on_exit(&mut store, None);
    status
}

fn entrypoint_of(
    workload: &Workload<'_>,
    instance: &wasmer::Instance,
) -> Result<wasmer::Function, WorkloadError> {
    instance
        .exports
        .get_function(&workload.function)
        .cloned()
        .map_err(|e| WorkloadError::MissingExport {
            what: workload.name.clone(),
            func: workload.function.clone(),
            reason: e.to_string(),
        })
}

/// A WASI `proc_exit` is an ordinary exit status; anything else the guest ended with is a trap.
fn exit_status(workload: &Workload<'_>, err: RuntimeError) -> Result<i32, WorkloadError> {
    match err.downcast_ref::<WasiError>() {
        Some(WasiError::Exit(code)) => Ok(code.raw()),
        _ => Err(WorkloadError::Trap {
            what: workload.name.clone(),
            reason: err.message(),
        }),
    }
}

fn instance_error(workload: &Workload<'_>, err: wasmer::InstantiationError) -> WorkloadError {
    use wasmer::{ExternType, InstantiationError, LinkError};
    use wasmer_types::ImportError;
    let load = |reason: String| WorkloadError::Load {
        what: workload.name.clone(),
        reason,
    };
    match err {
        InstantiationError::Start(trap) => start_error(workload, trap),
        // Wasmer names the types by their Rust form; this says it as the other engines do.
        InstantiationError::Link(LinkError::Import(
            module,
            name,
            ImportError::IncompatibleType(
                ExternType::Function(wanted),
                ExternType::Function(actual),
            ),
        )) => load(format!(
            "incompatible import type: {module}::{name} is imported as {}, but it is {}",
            wasmrunner_shim::func_signature(wanted.params(), wanted.results()),
            wasmrunner_shim::func_signature(actual.params(), actual.results())
        )),
        InstantiationError::Link(LinkError::Import(
            module,
            name,
            ImportError::UnknownImport(_),
        )) => load(format!(
            "unknown import: {WASI_P1} has no function {name:?} ({module}::{name})"
        )),
        InstantiationError::Link(LinkError::Resource(reason)) => load(reason),
        other => load(other.to_string()),
    }
}

/// The module's start function ended it: a trap is a trap; an exit, before the entrypoint
/// could run, means the module could not be started.
fn start_error(workload: &Workload<'_>, trap: RuntimeError) -> WorkloadError {
    match exit_status(workload, trap) {
        Ok(status) => WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("its start function exited with status {status}"),
        },
        Err(err) => err,
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A workload of the module written as `text`, as the shim would hand it over for a
    /// rootfs module, with the default capabilities (the rootfs read-write as `/`).
    fn workload(text: &str) -> Workload<'static> {
        Workload {
            name: "/m.wasm".to_string(),
            bytes: Cow::Owned(wat::parse_str(text).expect("valid text")),
            kind: WorkloadKind::Module,
            function: wasmrunner_shim::DEFAULT_FUNCTION.to_string(),
            args: vec!["/m.wasm".to_string()],
            env: Vec::new(),
            compiled: None,
            capabilities: Capabilities::default(),
            http_address: None,
            milestones: Default::default(),
        }
    }

    const EXIT_7: &str = r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") i32.const 7 call $exit))"#;

    #[test]
    fn proc_exit_is_the_guests_status_and_returning_is_0() {
        assert_eq!(run(workload(EXIT_7)).ok(), Some(7));
        assert_eq!(
            run(workload(r#"(module (func (export "_start")))"#)).ok(),
            Some(0)
        );
    }

    #[test]
    fn a_trap_is_134_with_wasmers_reason() {
        let err =
            run(workload(r#"(module (func (export "_start") unreachable))"#)).expect_err("traps");
        assert!(
            matches!(&err, WorkloadError::Trap { reason, .. } if reason.contains("unreachable")),
            "{err}"
        );
        assert_eq!(wasmrunner_shim::exit_code_for(&err), 134);
    }

    #[test]
    fn unbounded_recursion_is_a_trap() {
        let err =
            run(workload(r#"(module (func $f (export "_start") call $f))"#)).expect_err("traps");
        assert!(
            matches!(&err, WorkloadError::Trap { reason, .. } if reason.contains("call stack exhausted")),
            "{err}"
        );
    }

    #[test]
    fn wasix_and_other_imports_are_refused_by_name() {
        let err = run(workload(
            r#"(module (import "wasix_32v1" "sock_open" (func (param i32 i32 i32 i32) (result i32)))
                       (func (export "_start")))"#,
        ))
        .expect_err("refused");
        assert!(
            err.to_string().contains(
                "unknown import: wasix_32v1::sock_open is from a module this runtime does not \
                 provide (it provides wasi_snapshot_preview1 only; Wasmer's WASIX extensions are \
                 not offered)"
            ),
            "{err}"
        );
        assert_eq!(wasmrunner_shim::exit_code_for(&err), 126);
    }

    #[test]
    fn a_memory_is_capped_and_one_past_the_cap_is_refused() {
        // 4 pages allowed: growing from 2 by 2 works, by 3 more fails inside the guest.
        let grow = r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 2)
            (func (export "_start")
              i32.const 2 memory.grow drop
              i32.const 3 memory.grow i32.const -1 i32.eq
              if i32.const 9 call $exit end))"#;
        let mut capped = workload(grow);
        capped.capabilities.memory = Some(4 * 64 * 1024);
        assert_eq!(run(capped).ok(), Some(9));
        assert_eq!(run(workload(grow)).ok(), Some(0));

        let mut big = workload(r#"(module (memory 8) (func (export "_start")))"#);
        big.capabilities.memory = Some(4 * 64 * 1024);
        let err = run(big).expect_err("refused");
        assert!(
            err.to_string()
                .contains("starts with 8 pages of 64 KiB, more than the 4 pages"),
            "{err}"
        );
    }

    #[test]
    fn serialized_code_runs_as_the_module_does() {
        let compiled = crate::compiler::WasmerCompiler::new();
        let bytes = wat::parse_str(EXIT_7).expect("valid text");
        let serialized = compiled.compile_module(&bytes).expect("compiles");
        let mut precompiled = workload(EXIT_7);
        precompiled.kind = WorkloadKind::Precompiled;
        precompiled.bytes = Cow::Owned(serialized);
        assert_eq!(run(precompiled).ok(), Some(7));
    }

    #[test]
    fn an_entrypoint_with_parameters_is_refused() {
        let mut named = workload(r#"(module (func (export "go") (param i32)))"#);
        named.function = "go".to_string();
        let err = run(named).expect_err("refused");
        assert!(
            err.to_string()
                .contains("has no callable export \"go\": it takes 1 parameters"),
            "{err}"
        );
    }
}
