//! What the container's init process runs once libcontainer has set it up: a native
//! executable through `execve`, or the engine's sandbox for anything else.

use std::fs::File;
use std::io::Read;
use std::marker::PhantomData;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use containerd_shim_wasm::sandbox::Sandbox;
use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Shim;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use oci_spec::runtime::Spec;

use super::context::WorkloadContext;
use crate::module_cache::OfferedCode;

/// The exit status when the engine itself fails before it could report (126: cannot execute).
const ENGINE_FAILURE: i32 = 126;

pub struct WorkloadExecutor<S: Shim> {
    wasm_layers: Arc<Vec<WasmLayer>>,
    /// The node cache's compiled code for the rootfs module, open since the build.
    compiled: Arc<Mutex<Option<OfferedCode>>>,
    _engine: PhantomData<fn() -> S>,
}

impl<S: Shim> Clone for WorkloadExecutor<S> {
    fn clone(&self) -> Self {
        Self {
            wasm_layers: Arc::clone(&self.wasm_layers),
            compiled: Arc::clone(&self.compiled),
            _engine: PhantomData,
        }
    }
}

impl<S: Shim> WorkloadExecutor<S> {
    pub fn new(wasm_layers: Vec<WasmLayer>, compiled: Option<OfferedCode>) -> Self {
        Self {
            wasm_layers: Arc::new(wasm_layers),
            compiled: Arc::new(Mutex::new(compiled)),
            _engine: PhantomData,
        }
    }

    fn is_native(&self, spec: &Spec) -> bool {
        self.wasm_layers.is_empty() && native_entrypoint(spec).is_some()
    }

    fn run_wasm(&self, spec: &Spec) -> ! {
        if let Some(code) = self.compiled.lock().ok().and_then(|mut code| code.take()) {
            crate::workload::offer_compiled(code);
        }
        let ctx = WorkloadContext::new(spec, &self.wasm_layers);
        // One thread: the guest runs on it, and nothing else in this process needs more.
        let status = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => match runtime.block_on(S::Sandbox::default().run_wasi(&ctx)) {
                Ok(status) => status,
                Err(err) => {
                    eprintln!("wasmrunner ({}): error: {err:#}", S::name());
                    ENGINE_FAILURE
                }
            },
            Err(err) => {
                eprintln!(
                    "wasmrunner ({}): error: cannot start the engine's runtime: {err}",
                    S::name()
                );
                ENGINE_FAILURE
            }
        };
        std::process::exit(status)
    }
}

impl<S: Shim> Executor for WorkloadExecutor<S> {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if self.is_native(spec) {
            return DefaultExecutor {}.exec(spec);
        }
        self.run_wasm(spec)
    }

    /// Everything is accepted here: a native entrypoint was already found (libcontainer's
    /// own check would also insist on a `PATH` variable, which CRI's pause containers lack),
    /// and a workload that cannot run says why on its stderr and in its exit status, where
    /// the user looks, rather than as a failed create.
    fn validate(&self, _spec: &Spec) -> Result<(), ExecutorValidationError> {
        Ok(())
    }
}

/// The entrypoint, when it is a native executable (an ELF binary or a script with `#!`) in
/// the rootfs, which is `/` when this runs.
fn native_entrypoint(spec: &Spec) -> Option<PathBuf> {
    let process = spec.process().as_ref()?;
    let arg0 = process.args().as_ref()?.first()?;
    if arg0.contains('#') {
        return None;
    }
    let env_path = process
        .env()
        .as_ref()
        .and_then(|env| env.iter().find_map(|e| e.strip_prefix("PATH=")))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    let candidates: Vec<PathBuf> = if arg0.contains('/') {
        vec![PathBuf::from(arg0)]
    } else {
        env_path
            .split(':')
            .filter(|dir| !dir.is_empty())
            .map(|dir| Path::new(dir).join(arg0))
            .collect()
    };
    candidates
        .into_iter()
        .find(|path| is_native_executable(path))
}

fn is_native_executable(path: &Path) -> bool {
    let executable = path
        .metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0);
    if !executable {
        return false;
    }
    let mut magic = [0u8; 4];
    let read = File::open(path).and_then(|mut file| file.read_exact(&mut magic));
    read.is_ok() && (magic == *b"\x7fELF" || magic.starts_with(b"#!"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_and_scripts_are_native_wasm_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, bytes: &[u8], mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        assert!(is_native_executable(&write("elf", b"\x7fELF....", 0o755)));
        assert!(is_native_executable(&write(
            "script",
            b"#!/bin/sh\n",
            0o755
        )));
        assert!(!is_native_executable(&write(
            "module.wasm",
            b"\0asm\x01\0\0\0",
            0o755
        )));
        assert!(!is_native_executable(&write(
            "not-exec",
            b"\x7fELF....",
            0o644
        )));
        assert!(!is_native_executable(&dir.path().join("missing")));
    }
}
