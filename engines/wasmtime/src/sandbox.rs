//! Runs one workload inside the container's init process.

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use wasmrunner_shim::capabilities::{Capabilities, Key};
use wasmrunner_shim::{
    DEFAULT_FUNCTION, EngineInfo, RunWorkload, Workload, WorkloadError, WorkloadKind,
};
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Linker, Module, Precompiled, Store, Trap, Val};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::Command;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxView, WasiView};

use crate::cpu_deadline;
use crate::engine::{INFO, new_container_engine};
use crate::guest::{Guest, limited_store, wasi_builder};
use crate::serve;

#[derive(Default)]
pub struct WasmtimeSandbox;

impl RunWorkload for WasmtimeSandbox {
    const ENGINE: EngineInfo = INFO;

    async fn run_workload(&self, workload: Workload<'_>) -> Result<i32, WorkloadError> {
        run(workload).await
    }
}

/// runwasi's entry point: the workload as runwasi describes it, with the default
/// capabilities and no node cache (wasmrunner's own init process calls `run_workload`).
impl Sandbox for WasmtimeSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let outcome = match Workload::load(ctx, None, Capabilities::default(), Default::default()) {
            Ok(workload) => run(workload).await,
            Err(err) => Err(err),
        };
        Ok(outcome.unwrap_or_else(|err| err.report(INFO.name)))
    }

    /// Accepts every non-native entrypoint: what is wrong with one is reported when it runs,
    /// on the container's stderr, where the user looks.
    async fn can_handle(&self, _ctx: &impl RuntimeContext) -> anyhow::Result<()> {
        Ok(())
    }
}

async fn run(mut workload: Workload<'_>) -> Result<i32, WorkloadError> {
    let compiled = workload.compiled.take();
    let load_error = |e: wasmtime::Error| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("{e:#}"),
    };
    let engine = new_container_engine().map_err(load_error)?;
    let code = match (compiled, workload.kind) {
        (Some(file), WorkloadKind::Precompiled) => layer_code(&engine, &workload, file)?,
        (None, WorkloadKind::Precompiled) => deserialize(&engine, &workload, &workload.bytes)?,
        (compiled, kind) => match compiled.and_then(|file| from_node_cache(&engine, kind, file)) {
            Some(code) => code,
            None if kind == WorkloadKind::Component => {
                Code::Component(Component::new(&engine, &workload.bytes).map_err(load_error)?)
            }
            None => Code::Module(Module::new(&engine, &workload.bytes).map_err(load_error)?),
        },
    };
    match code {
        Code::Module(module) => run_module(&engine, &module, &workload).await,
        Code::Component(component) if serve::is_server(&engine, &component) => {
            serve::serve(&engine, component, &workload).await
        }
        Code::Component(component) => run_component(&engine, &component, &workload).await,
    }
}

/// A store for the guest, limited as its capabilities say: linear memory, table elements
/// and instances through a `ResourceLimiter` (a `memory.grow` past the cap fails inside the
/// guest, as `-1`), and its CPU time through epoch interruption (see [`cpu_deadline`]).
fn guest_store<T: 'static>(
    engine: &Engine,
    workload: &Workload<'_>,
    wasi: T,
) -> Result<Store<Guest<T>>, WorkloadError> {
    let caps = &workload.capabilities;
    let mut store = limited_store(engine, caps, wasi);
    // The engine's epoch only moves when the CPU deadline passes: the guest then traps at
    // its next loop head or call with `Trap::Interrupt`.
    store.set_epoch_deadline(1);
    if let Some(deadline) = caps.cpu_deadline {
        cpu_deadline::arm(engine, deadline).map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("cannot arm the CPU deadline: {e}"),
        })?;
    }
    Ok(store)
}

enum Code {
    Module(Module),
    Component(Component),
}

/// The node cache's code for the workload (see `wasmrunner_shim::module_cache`): a module's
/// is mapped from the file, so every container of it shares the pages; a component's is read.
/// `None` when it does not load (another Wasmtime's, say): the workload is compiled here.
fn from_node_cache(engine: &Engine, kind: WorkloadKind, file: std::fs::File) -> Option<Code> {
    let loaded = match kind {
        // SAFETY: the file is the node cache's: written by the shim (as root, in a directory
        // only root can write) with the output of `WasmtimeCompiler::compile`, under this
        // engine's compatibility hash, for the module whose sha256 the shim checked against
        // the one this container runs; Wasmtime also checks the header, version and settings.
        WorkloadKind::Module => {
            unsafe { Module::deserialize_open_file(engine, file) }.map(Code::Module)
        }
        WorkloadKind::Component => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut &file, &mut bytes).ok()?;
            // SAFETY: as for modules above.
            unsafe { Component::deserialize(engine, &bytes) }.map(Code::Component)
        }
        WorkloadKind::Precompiled => return None,
    };
    loaded
        .inspect_err(|e| tracing::debug!("not using the node's compiled code: {e:#}"))
        .ok()
}

/// A precompiled layer's code, which the shim put in the node cache instead of sending it: a
/// module's is mapped, a component's read.
fn layer_code(
    engine: &Engine,
    workload: &Workload<'_>,
    file: std::fs::File,
) -> Result<Code, WorkloadError> {
    let read_error = |e: std::io::Error| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("reading the precompiled code: {e}"),
    };
    let mut bytes = Vec::new();
    let mapped = file.try_clone().ok().and_then(|file| {
        // SAFETY: the file is the node cache's copy of this layer's precompiled code, written
        // by the shim (see `from_node_cache`) from the content store's blob, which runwasi's
        // labels tie to this engine's compatibility hash; Wasmtime checks header and version.
        unsafe { Module::deserialize_open_file(engine, file) }.ok()
    });
    if let Some(module) = mapped {
        return Ok(Code::Module(module));
    }
    std::io::Read::read_to_end(&mut &file, &mut bytes).map_err(read_error)?;
    deserialize(engine, workload, &bytes)
}

fn deserialize(
    engine: &Engine,
    workload: &Workload<'_>,
    bytes: &[u8],
) -> Result<Code, WorkloadError> {
    let load_error = |e: wasmtime::Error| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("{e:#}"),
    };
    match Engine::detect_precompiled(bytes) {
        // SAFETY: precompiled bytes only come from containerd's content store, under a label
        // that runwasi writes with the output of `WasmtimeCompiler::compile` and whose key is
        // this engine's compatibility hash; Wasmtime also checks the header and version.
        Some(Precompiled::Module) => unsafe { Module::deserialize(engine, bytes) }
            .map(Code::Module)
            .map_err(load_error),
        // SAFETY: as for modules above.
        Some(Precompiled::Component) => unsafe { Component::deserialize(engine, bytes) }
            .map(Code::Component)
            .map_err(load_error),
        None => Err(WorkloadError::NotWasm {
            what: workload.name.clone(),
            reason: "the precompiled layer is not Wasmtime code".to_string(),
        }),
    }
}

async fn run_module(
    engine: &Engine,
    module: &Module,
    workload: &Workload<'_>,
) -> Result<i32, WorkloadError> {
    let wasi = wasi_builder(&workload.args, &workload.env, &workload.capabilities)?.build_p1();
    let mut store = guest_store(engine, workload, wasi)?;
    let mut linker: Linker<Guest<WasiP1Ctx>> = Linker::new(engine);
    let load_error = |e: wasmtime::Error| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("{e:#}"),
    };
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |guest| &mut guest.wasi)
        .map_err(load_error)?;
    let instance = linker
        .instantiate_async(&mut store, module)
        .await
        .map_err(|e| guest_outcome(workload, e))?;
    let func = instance
        .get_func(&mut store, &workload.function)
        .ok_or_else(|| WorkloadError::MissingExport {
            what: workload.name.clone(),
            func: workload.function.clone(),
            reason: "no function is exported under that name".to_string(),
        })?;
    let ty = func.ty(&store);
    if ty.params().len() != 0 {
        return Err(WorkloadError::MissingExport {
            what: workload.name.clone(),
            func: workload.function.clone(),
            reason: format!(
                "it takes {} parameters; an entrypoint takes none",
                ty.params().len()
            ),
        });
    }
    let mut results: Vec<Val> = ty
        .results()
        .map(|result| Val::default_for_ty(&result).unwrap_or(Val::I32(0)))
        .collect();
    workload.ready_to_run();
    match func.call_async(&mut store, &[], &mut results).await {
        Ok(()) => Ok(0),
        Err(err) => exit_status(workload, err),
    }
}

struct ComponentState {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Guest<ComponentState> {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi.ctx,
            table: &mut self.wasi.table,
        }
    }
}

async fn run_component(
    engine: &Engine,
    component: &Component,
    workload: &Workload<'_>,
) -> Result<i32, WorkloadError> {
    if workload.function != DEFAULT_FUNCTION {
        return Err(WorkloadError::Unsupported(format!(
            "{} is a component: it runs wasi:cli/run, and an entrypoint function ({:?}) is only for modules",
            workload.name, workload.function
        )));
    }
    let state = ComponentState {
        ctx: wasi_builder(&workload.args, &workload.env, &workload.capabilities)?.build(),
        table: ResourceTable::new(),
    };
    let mut store = guest_store(engine, workload, state)?;
    let mut linker = wasmtime::component::Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| WorkloadError::Load {
        what: workload.name.clone(),
        reason: format!("{e:#}"),
    })?;
    let command = Command::instantiate_async(&mut store, component, &linker)
        .await
        .map_err(|e| guest_outcome(workload, e))?;
    workload.ready_to_run();
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Ok(0),
        Ok(Err(())) => Ok(1),
        Err(err) => exit_status(workload, err),
    }
}

/// An error from running guest code: a WASI `proc_exit` is an ordinary exit status, the
/// epoch interrupt is the CPU deadline, anything else is a trap.
fn exit_status(workload: &Workload<'_>, err: wasmtime::Error) -> Result<i32, WorkloadError> {
    match err.downcast_ref::<I32Exit>() {
        Some(exit) => Ok(exit.0),
        None => Err(guest_outcome(workload, err)),
    }
}

/// Instantiation fails either because imports do not link (the module cannot be loaded) or
/// because a start function ran and exited or trapped.
fn guest_outcome(workload: &Workload<'_>, err: wasmtime::Error) -> WorkloadError {
    let trap = err.downcast_ref::<Trap>();
    if let (Some(Trap::Interrupt), Some(deadline)) = (trap, workload.capabilities.cpu_deadline) {
        WorkloadError::CpuDeadline {
            what: workload.name.clone(),
            deadline,
        }
    } else if trap.is_some() {
        WorkloadError::Trap {
            what: workload.name.clone(),
            reason: format!("{err:#}"),
        }
    } else {
        WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("{err:#}{}", limits_in_force(&workload.capabilities)),
        }
    }
}

/// The engine limits the policy set, for a message about a guest that could not be
/// instantiated (a table or instance over its limit reads as Wasmtime's own words).
fn limits_in_force(caps: &Capabilities) -> String {
    let limits: Vec<String> = [(Key::Tables, caps.tables), (Key::Instances, caps.instances)]
        .into_iter()
        .filter_map(|(key, limit)| Some(format!("{} = {}", key.annotation(), limit?)))
        .collect();
    if limits.is_empty() {
        String::new()
    } else {
        format!(" (limits in force: {})", limits.join(", "))
    }
}
