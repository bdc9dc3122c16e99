//! Runs one workload inside the container's init process.

use std::borrow::Cow;
use std::collections::HashMap;

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::RuntimeContext;
use wasmedge_sdk::error::{CoreCommonError, CoreError, CoreInstantiationError, WasmEdgeError};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{AsInstance, ExternalInstanceType, Module, Store, Vm};
use wasmedge_sys::instance::function::AsFunc;
use wasmrunner_shim::capabilities::Capabilities;
use wasmrunner_shim::{
    EngineInfo, RunWorkload, Workload, WorkloadError, WorkloadKind, func_signature,
};

use crate::call_depth;
use crate::engine::{INFO, run_config};

#[derive(Default)]
pub struct WasmEdgeSandbox;

impl RunWorkload for WasmEdgeSandbox {
    const ENGINE: EngineInfo = INFO;

    async fn run_workload(&self, workload: Workload<'_>) -> Result<i32, WorkloadError> {
        run(&workload)
    }
}

/// runwasi's entry point: the workload as runwasi describes it, with the default
/// capabilities and no node cache (wasmrunner's own init process calls `run_workload`).
impl Sandbox for WasmEdgeSandbox {
    async fn run_wasi(&self, ctx: &impl RuntimeContext) -> anyhow::Result<i32> {
        let outcome = Workload::load(ctx, None, Capabilities::default(), Default::default())
            .and_then(|workload| run(&workload));
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
    run(&workload)
}

fn run(workload: &Workload<'_>) -> Result<i32, WorkloadError> {
    if workload.kind == WorkloadKind::Component {
        return Err(WorkloadError::components_unsupported(
            &workload.name,
            "WasmEdge",
        ));
    }
    let load_error = |e: Box<WasmEdgeError>| WorkloadError::Load {
        what: workload.name.clone(),
        reason: e.to_string(),
    };
    let args = c_strings(workload, "argument", workload.args.iter().cloned())?;
    let env = c_strings(
        workload,
        "environment variable",
        workload
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}")),
    )?;

    // One clear line on stderr comes from `WorkloadError::report`; WasmEdge's own log would
    // repeat it in its own format.
    wasmedge_sdk::LogManager::log_off();
    // Precompiled code is WasmEdge's universal format: a module with an AOT section, used only
    // when the shim compiled it (see `run_config`).
    let max_pages = workload.capabilities.memory_pages();
    let config =
        run_config(workload.kind == WorkloadKind::Precompiled, max_pages).map_err(load_error)?;
    check_declared_sizes(workload, max_pages)?;
    let bounded = bounded_call_depth(workload)?;
    let module = Module::from_bytes(Some(&config), &bounded).map_err(load_error)?;
    drop(bounded);
    check_entrypoint(workload, &module)?;

    let preopens = preopens(workload)?;
    let mut wasi = WasiModule::create(
        Some(args.iter().map(String::as_str).collect()),
        Some(env.iter().map(String::as_str).collect()),
        Some(preopens.iter().map(String::as_str).collect()),
    )
    .map_err(load_error)?;
    let unlinkable = unlinkable_imports(&module, &wasi);
    let outcome = {
        let mut instances = HashMap::new();
        instances.insert(wasi.name().to_string(), wasi.as_mut());
        let store = Store::new(Some(&config), instances).map_err(load_error)?;
        let mut vm = Vm::new(store);
        match vm.register_module(None, module) {
            Ok(_) => {
                workload.ready_to_run();
                let result = vm.run_func(None, &workload.function, []).map(|_| ());
                result.map_err(|err| (err, call_stack_slots(&vm)))
            }
            Err(err) => Err((err, None)),
        }
    };
    match outcome {
        // WasmEdge reports a `proc_exit` as success or as "terminated"; the status is kept by
        // the WASI module either way (0 when the guest returned from its entrypoint).
        Ok(()) => Ok(wasi.exit_code() as i32),
        Err((err, _)) if is_exit(&err) => Ok(wasi.exit_code() as i32),
        Err((err, slots)) => Err(classify_error(workload, &err, slots, &unlinkable)),
    }
}

/// The most elements a table may start with here. WasmEdge 0.14 allocates a table whole at
/// instantiation, 16 bytes an element, and a table of billions of elements crashes the
/// process (SIGSEGV) instead of failing: 10 million elements (160 MiB) is far beyond what
/// compilers emit, and still allocates.
pub const MAX_TABLE_ELEMENTS: u64 = 10_000_000;

/// Refuses a module whose tables or memories start larger than this runtime gives them, before
/// WasmEdge instantiates it: a table past [`MAX_TABLE_ELEMENTS`], which WasmEdge would crash
/// on, and a memory past `max_pages` (the cap of `wasmrunner.dev/memory` or the container's
/// memory limit), which WasmEdge enforces on `memory.grow` only. The bytes are checked as they
/// are; what does not parse is left for the loader to report.
fn check_declared_sizes(
    workload: &Workload<'_>,
    max_pages: Option<u32>,
) -> Result<(), WorkloadError> {
    use wasmparser::{Parser, Payload, TypeRef};
    let too_big = |reason: String| WorkloadError::Load {
        what: workload.name.clone(),
        reason,
    };
    let check_table = |what: &str, initial: u64| {
        if initial > MAX_TABLE_ELEMENTS {
            return Err(too_big(format!(
                "{what} starts with {initial} elements; WasmEdge allocates a table whole, and \
                 wasmrunner runs tables of at most {MAX_TABLE_ELEMENTS} elements with it"
            )));
        }
        Ok(())
    };
    let check_memory = |what: &str, initial: u64| match max_pages {
        Some(max) if initial > u64::from(max) => Err(too_big(format!(
            "{what} starts with {initial} pages of 64 KiB, more than the {max} pages the guest \
             may have (wasmrunner.dev/memory, or the container's memory limit)"
        ))),
        _ => Ok(()),
    };
    for payload in Parser::new(0).parse_all(&workload.bytes) {
        match payload {
            Ok(Payload::ImportSection(imports)) => {
                for import in imports.into_imports().flatten() {
                    let what = format!("imported {}::{}", import.module, import.name);
                    match import.ty {
                        TypeRef::Table(table) => {
                            check_table(&format!("the {what} table"), table.initial)?
                        }
                        TypeRef::Memory(memory) => {
                            check_memory(&format!("the {what} memory"), memory.initial)?
                        }
                        _ => {}
                    }
                }
            }
            Ok(Payload::TableSection(tables)) => {
                for (index, table) in tables.into_iter().flatten().enumerate() {
                    check_table(&format!("table {index}"), table.ty.initial)?;
                }
            }
            Ok(Payload::MemorySection(memories)) => {
                for (index, memory) in memories.into_iter().flatten().enumerate() {
                    check_memory(&format!("memory {index}"), memory.initial)?;
                }
            }
            // Code and data come after what is checked: no need to read them.
            Ok(Payload::CodeSectionStart { .. } | Payload::DataSection(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The module's imports that WasmEdge cannot link, each with why: the guest gets only WASI
/// preview 1 (`wasi_snapshot_preview1`), so an import of another module, of a function WASI
/// does not have, or of one under another type than WASI's cannot be satisfied. WasmEdge's own
/// error says only "unknown import" or "incompatible import type"; this names the imports.
fn unlinkable_imports(module: &Module, wasi: &WasiModule) -> Vec<String> {
    let provided = wasi.name();
    let instance = wasi.as_ref();
    module
        .imports()
        .iter()
        .filter_map(|import| {
            let (from, name) = (import.module_name(), import.name());
            let which = format!("{from}::{name}");
            if from != provided {
                return Some(format!(
                    "{which} is from a module this runtime does not provide (it provides \
                     {provided} only)"
                ));
            }
            let Ok(ExternalInstanceType::Func(wanted)) = import.ty() else {
                return Some(format!(
                    "{which} is not a function, and {provided} exports only functions"
                ));
            };
            let Ok(func) = instance.get_func(&name) else {
                return Some(format!("{provided} has no function {name:?}"));
            };
            let actual = AsFunc::ty(&*func)?;
            (actual.args() != wanted.args() || actual.returns() != wanted.returns()).then(|| {
                format!(
                    "{which} is imported as {}, but it is {}",
                    func_signature(wanted.args(), wanted.returns()),
                    func_signature(actual.args(), actual.returns())
                )
            })
        })
        .collect()
}

/// The directories the policy grants, as WasmEdge takes them: `GUEST:PATH`, with
/// `:readonly` unless writable. Paths are the container's: its rootfs is this process's `/`.
/// WasmEdge splits on `:`, so a path holding one cannot be granted.
fn preopens(workload: &Workload<'_>) -> Result<Vec<String>, WorkloadError> {
    let mut preopens = Vec::new();
    for preopen in &workload.capabilities.files.0 {
        if preopen.path.contains(':') || preopen.guest.contains(':') {
            return Err(WorkloadError::Policy(format!(
                "WasmEdge cannot preopen {preopen}: a path with a ':' in it"
            )));
        }
        let mode = if preopen.writable { "" } else { ":readonly" };
        preopens.push(format!("{}:{}{mode}", preopen.guest, preopen.path));
    }
    Ok(preopens)
}

/// The workload's module rewritten to bound its call depth ([`call_depth`]). Precompiled code
/// is the shim's own output, rewritten before it was compiled, and is used as it is.
fn bounded_call_depth<'a>(workload: &'a Workload<'_>) -> Result<Cow<'a, [u8]>, WorkloadError> {
    if workload.kind == WorkloadKind::Precompiled {
        return Ok(Cow::Borrowed(&workload.bytes));
    }
    call_depth::bound_call_depth(&workload.bytes)
        .map(Cow::Owned)
        .map_err(|e| WorkloadError::Load {
            what: workload.name.clone(),
            reason: e.to_string(),
        })
}

/// The stack slots the guest's calls held when it stopped, from the counter the call-depth
/// rewrite exports; `None` if the active instance has no such counter.
pub(crate) fn call_stack_slots<T: ?Sized + SyncInst>(vm: &Vm<'_, T>) -> Option<u32> {
    let instance = vm.active_module()?;
    let counter = instance.get_global(call_depth::COUNTER_EXPORT).ok()?;
    // The counter is an unsigned count kept in an i32; the cast reinterprets its bits.
    Some(counter.get_value().to_i32() as u32)
}

/// The function to call must exist and take no parameters, as `_start` does.
fn check_entrypoint(workload: &Workload<'_>, module: &Module) -> Result<(), WorkloadError> {
    let missing = |reason: String| WorkloadError::MissingExport {
        what: workload.name.clone(),
        func: workload.function.clone(),
        reason,
    };
    match module.get_export(&workload.function) {
        Some(ExternalInstanceType::Func(ty)) if ty.args_len() == 0 => Ok(()),
        Some(ExternalInstanceType::Func(ty)) => Err(missing(format!(
            "it takes {} parameters; an entrypoint takes none",
            ty.args_len()
        ))),
        Some(_) => Err(missing("the export is not a function".to_string())),
        None => Err(missing(
            "no function is exported under that name".to_string(),
        )),
    }
}

/// WASI takes C strings: one with a NUL byte inside cannot be passed (and would make the
/// WasmEdge bindings panic), so it is refused with a message instead.
fn c_strings(
    workload: &Workload<'_>,
    what: &str,
    values: impl Iterator<Item = String>,
) -> Result<Vec<String>, WorkloadError> {
    values
        .map(|value| {
            if value.contains('\0') {
                Err(WorkloadError::Load {
                    what: workload.name.clone(),
                    reason: format!("{what} {value:?} contains a NUL byte"),
                })
            } else {
                Ok(value)
            }
        })
        .collect()
}

fn is_exit(err: &WasmEdgeError) -> bool {
    matches!(
        err,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}

/// Execution errors are traps; anything else (imports that do not link, a module that does
/// not validate) means the module cannot be loaded. A trap with the call-depth counter
/// (`slots`) over its budget was the bound's check, and says so. An import that does not link
/// is named, from `unlinkable` ([`unlinkable_imports`]).
fn classify_error(
    workload: &Workload<'_>,
    err: &WasmEdgeError,
    slots: Option<u32>,
    unlinkable: &[String],
) -> WorkloadError {
    match err {
        WasmEdgeError::Core(CoreError::Execution(reason)) => WorkloadError::Trap {
            what: workload.name.clone(),
            reason: slots
                .and_then(call_depth::exhausted)
                .unwrap_or_else(|| reason.to_string()),
        },
        WasmEdgeError::Core(CoreError::Instantiation(
            CoreInstantiationError::UnknownImport | CoreInstantiationError::IncompatibleImportType,
        )) if !unlinkable.is_empty() => WorkloadError::Load {
            what: workload.name.clone(),
            reason: format!("{err}: {}", unlinkable.join("; ")),
        },
        other => WorkloadError::Load {
            what: workload.name.clone(),
            reason: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the module written as `text` with [`run_on_host`], as the run-on-host example does.
    fn run_text(text: &str) -> Result<i32, WorkloadError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("module.wasm");
        std::fs::write(&path, wat::parse_str(text).expect("valid text")).expect("write");
        run_on_host(Workload::on_host(path.to_str().expect("utf-8 path"), &[])?)
    }

    #[test]
    fn unbounded_recursion_is_a_trap_that_says_why() {
        let err = run_text(
            r#"(module
                 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (func $start (export "_start") call $start))"#,
        )
        .expect_err("traps");
        assert!(
            matches!(&err, WorkloadError::Trap { reason, .. }
                if reason.starts_with("call stack exhausted")),
            "{err}"
        );
        assert_eq!(wasmrunner_shim::exit_code_for(&err), 134);
    }

    #[test]
    fn other_traps_keep_wasmedges_message() {
        let err = run_text(r#"(module (func (export "_start") call $f) (func $f unreachable))"#)
            .expect_err("traps");
        assert!(
            matches!(&err, WorkloadError::Trap { reason, .. } if reason == "unreachable"),
            "{err}"
        );
    }

    #[test]
    fn moderate_recursion_exits_with_the_guests_status() {
        let status = run_text(
            r#"(module
                 (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
                 (func $down (param i32) (result i32)
                   local.get 0
                   if (result i32)
                     local.get 0 i32.const 1 i32.sub call $down i32.const 1 i32.add
                   else
                     i32.const 0
                   end)
                 (func (export "_start")
                   i32.const 1000 call $down i32.const 993 i32.sub call $exit))"#,
        )
        .expect("runs");
        assert_eq!(status, 7);
    }

    #[test]
    fn imports_that_do_not_link_are_named() {
        let err = run_text(
            r#"(module (import "env" "host_thing" (func $t)) (func (export "_start") call $t))"#,
        )
        .expect_err("refused");
        assert!(
            matches!(&err, WorkloadError::Load { reason, .. }
                if reason.starts_with("unknown import: env::host_thing is from a module")),
            "{err}"
        );
        let err = run_text(
            r#"(module (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32)))
                       (func (export "_start") i32.const 1 call $w))"#,
        )
        .expect_err("refused");
        assert!(
            err.to_string().contains(
                "wasi_snapshot_preview1::fd_write is imported as (func (param i32)), but it is \
                 (func (param i32 i32 i32 i32) (result i32))"
            ),
            "{err}"
        );
        assert_eq!(wasmrunner_shim::exit_code_for(&err), 126);
    }

    #[test]
    fn a_table_too_big_to_allocate_is_refused_not_crashed_on() {
        let err = run_text(r#"(module (table 4294967295 funcref) (func (export "_start")))"#)
            .expect_err("refused");
        assert!(
            matches!(&err, WorkloadError::Load { reason, .. }
                if reason.starts_with("table 0 starts with 4294967295 elements")),
            "{err}"
        );
        assert_eq!(
            run_text(r#"(module (table 1000 funcref) (func (export "_start")))"#).ok(),
            Some(0)
        );
    }

    #[test]
    fn a_memory_that_starts_past_the_cap_is_refused() {
        let bytes = wat::parse_str(r#"(module (memory 65536) (func (export "_start")))"#)
            .expect("valid text");
        let mut workload = Workload {
            name: "/m.wasm".to_string(),
            bytes: Cow::Owned(bytes),
            kind: WorkloadKind::Module,
            function: wasmrunner_shim::DEFAULT_FUNCTION.to_string(),
            args: vec!["/m.wasm".to_string()],
            env: Vec::new(),
            compiled: None,
            capabilities: Capabilities::default(),
            http_address: None,
            milestones: Default::default(),
        };
        workload.capabilities.memory = Some(256 << 20);
        let err = run(&workload).expect_err("refused");
        assert!(
            err.to_string()
                .contains("memory 0 starts with 65536 pages of 64 KiB, more than the 4096 pages"),
            "{err}"
        );
        workload.capabilities.memory = None;
        assert_eq!(run(&workload).ok(), Some(0));
    }

    #[test]
    fn a_module_that_uses_the_reserved_name_cannot_load() {
        let text = format!(
            r#"(module (func (export "_start")) (global (export "{}") i32 (i32.const 0)))"#,
            call_depth::COUNTER_EXPORT
        );
        let err = run_text(&text).expect_err("refused");
        assert!(matches!(err, WorkloadError::Load { .. }), "{err}");
        assert_eq!(wasmrunner_shim::exit_code_for(&err), 126);
    }
}
