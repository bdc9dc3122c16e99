//! What the guest learns about its stdin, stdout and stderr.
//!
//! WASIX answers `fd_fdstat_get` for descriptors 0, 1 and 2 with "character device" whatever
//! is behind them, so every guest believes it talks to a terminal: ripgrep prints its
//! terminal form (a heading per file) into containerd's log, and a program that colours a
//! terminal's output colours the log. Wasmtime and WasmEdge report a character device only
//! for a terminal. Here WASIX's `fd_fdstat_get` is wrapped: for 0-2 the file type it wrote is
//! replaced with "unknown" unless the container's own descriptor is a terminal (the shim
//! refuses `ctr run -t` today, so it never is). Everything else WASIX reports (flags,
//! rights) and every other descriptor is left as WASIX says. The wrapper writes one byte
//! into the guest's own memory, at the address the guest gave for the answer, inside the
//! struct WASIX has just written there.

use std::io::IsTerminal;

use wasmer::{
    AsStoreMut, Extern, Function, FunctionEnv, FunctionEnvMut, Imports, Instance, Memory,
    RuntimeError, Value,
};

const WASI_P1: &str = "wasi_snapshot_preview1";
const FD_FDSTAT_GET: &str = "fd_fdstat_get";
/// `filetype::unknown` of WASI preview 1 (what Wasmtime reports for a pipe); `fs_filetype`
/// is the first byte of `fdstat`.
const FILETYPE_UNKNOWN: u8 = 0;

pub struct StdioFdstat {
    wasix: Function,
    memory: Option<Memory>,
    /// Whether descriptors 0, 1 and 2 of this process are terminals.
    terminal: [bool; 3],
}

/// Puts the wrapper in place of WASIX's `fd_fdstat_get` in `imports`, when WASIX provides
/// one; [`give_memory`] must follow instantiation.
pub fn wrap_fdstat(
    store: &mut impl AsStoreMut,
    imports: &mut Imports,
) -> Option<FunctionEnv<StdioFdstat>> {
    let Some(Extern::Function(wasix)) = imports.get_export(WASI_P1, FD_FDSTAT_GET) else {
        return None;
    };
    let terminal = [
        std::io::stdin().is_terminal(),
        std::io::stdout().is_terminal(),
        std::io::stderr().is_terminal(),
    ];
    let env = FunctionEnv::new(
        store,
        StdioFdstat {
            wasix,
            memory: None,
            terminal,
        },
    );
    let wrapper = Function::new_typed_with_env(store, &env, fd_fdstat_get);
    imports.define(WASI_P1, FD_FDSTAT_GET, wrapper);
    Some(env)
}

/// Gives the wrapper the instance's memory, where the guest's answers are written.
pub fn give_memory(
    store: &mut impl AsStoreMut,
    env: &FunctionEnv<StdioFdstat>,
    instance: &Instance,
) {
    let memory = instance
        .exports
        .iter()
        .find_map(|(_, export)| match export {
            Extern::Memory(memory) => Some(memory.clone()),
            _ => None,
        });
    env.as_mut(store).memory = memory;
}

fn fd_fdstat_get(
    mut env: FunctionEnvMut<'_, StdioFdstat>,
    fd: i32,
    buf: i32,
) -> Result<i32, RuntimeError> {
    let (data, mut store) = env.data_and_store_mut();
    let results = data
        .wasix
        .call(&mut store, &[Value::I32(fd), Value::I32(buf)])?;
    let errno = results
        .first()
        .and_then(Value::i32)
        .ok_or_else(|| RuntimeError::new("WASIX's fd_fdstat_get returned no errno"))?;
    let stdio = usize::try_from(fd)
        .ok()
        .filter(|fd| *fd < data.terminal.len());
    if let (0, Some(fd), Some(memory)) = (errno, stdio, &data.memory)
        && !data.terminal[fd]
    {
        // WASIX wrote the answer at `buf` (errno 0), so the address is in the memory.
        let at = u64::from(buf as u32);
        memory
            .view(&store)
            .write_u8(at, FILETYPE_UNKNOWN)
            .map_err(|e| RuntimeError::new(e.to_string()))?;
    }
    Ok(errno)
}
