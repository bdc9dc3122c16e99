use std::io::Write;
use std::time::Duration;

use wasmrunner_capabilities::{CPU_DEADLINE_STATUS, Key};

/// Why a workload could not run. Each variant maps to an exit status and a line on the
/// container's stderr, so the user sees the reason in `ctr` output or `kubectl logs`
/// instead of a bare status.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// The entrypoint named in the OCI process args is not in the container's rootfs;
    /// `reason` says why, when it is not just that nothing is there (a path too long to be).
    #[error(
        "entrypoint {} not found in the container's rootfs{}",
        shown_path(path),
        reason.as_ref().map(|reason| format!(": {reason}")).unwrap_or_default()
    )]
    EntrypointNotFound {
        path: String,
        reason: Option<String>,
    },
    /// The OCI process args are empty, or their first is: nothing names what to run.
    #[error(
        "the container has no entrypoint: its process args are empty or start with an empty \
         string (the image sets no Entrypoint or Cmd, and none was given when it was run)"
    )]
    NoEntrypoint,
    /// The entrypoint exists but is not a module or component this engine can load.
    #[error("{what} is not a WebAssembly module or component: {reason}")]
    NotWasm { what: String, reason: String },
    /// The module or component failed to compile, link or instantiate.
    #[error("cannot load {what}: {reason}")]
    Load { what: String, reason: String },
    /// The function named after `#` in the entrypoint does not exist or has the wrong type.
    #[error("{what} has no callable export {func:?}: {reason}")]
    MissingExport {
        what: String,
        func: String,
        reason: String,
    },
    /// This engine cannot run this kind of workload at all.
    #[error("{0}")]
    Unsupported(String),
    /// The guest trapped (for example `unreachable`, an out-of-bounds access, or memory exhaustion).
    #[error("{what} trapped: {reason}")]
    Trap { what: String, reason: String },
    /// The capability policy is malformed, asks for what the engine cannot enforce, or grants
    /// less than the image needs: the guest does not run at all.
    #[error("{0}")]
    Policy(String),
    /// The guest used all the CPU time `wasmrunner.dev/cpu-deadline` gives it.
    #[error("{what} used its CPU time ({} = {deadline:?}) and was stopped", Key::CpuDeadline.annotation())]
    CpuDeadline { what: String, deadline: Duration },
}

/// The exit status for a workload that could not run, following the shell's conventions:
/// 127 for "not found", 126 for "found but cannot be executed", and 134 (as for SIGABRT)
/// for a guest that trapped, 152 (as for SIGXCPU) for one stopped at its CPU deadline.
pub fn exit_code_for(err: &WorkloadError) -> i32 {
    match err {
        WorkloadError::EntrypointNotFound { .. } | WorkloadError::NoEntrypoint => 127,
        WorkloadError::Trap { .. } => 134,
        WorkloadError::CpuDeadline { .. } => CPU_DEADLINE_STATUS,
        WorkloadError::NotWasm { .. }
        | WorkloadError::Load { .. }
        | WorkloadError::MissingExport { .. }
        | WorkloadError::Unsupported(_)
        | WorkloadError::Policy(_) => 126,
    }
}

impl WorkloadError {
    /// What an engine that runs only core modules (WASI preview 1) says of a component
    /// (`what`): 126, with where components do run.
    pub fn components_unsupported(what: &str, engine: &str) -> Self {
        WorkloadError::Unsupported(format!(
            "{what} is a WebAssembly component (WASI preview 2); {engine} runs only core modules \
             (WASI preview 1). Run components with the wasmtime runtime \
             (io.containerd.wasmtime.v1, RuntimeClass wasmtime)"
        ))
    }

    /// Writes the error to the container's stderr (containerd's stderr fifo) and returns the
    /// exit status the container should end with.
    pub fn report(&self, engine: &str) -> i32 {
        let mut stderr = std::io::stderr().lock();
        // Nothing useful can be done if the fifo is gone; the exit status still tells.
        let _ = writeln!(stderr, "wasmrunner ({engine}): error: {self}");
        let _ = stderr.flush();
        exit_code_for(self)
    }
}

/// A function type as the text format writes it, for a message about an import that does not
/// link: `(func (param i32) (result i32))`. `params` and `results` are an engine's value
/// types, written as their `Debug` form in lower case (`I32` is `i32`).
pub fn func_signature<T: std::fmt::Debug>(params: &[T], results: &[T]) -> String {
    let list = |types: &[T]| {
        types
            .iter()
            .map(|t| format!("{t:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut text = "(func".to_string();
    if !params.is_empty() {
        text.push_str(&format!(" (param {})", list(params)));
    }
    if !results.is_empty() {
        text.push_str(&format!(" (result {})", list(results)));
    }
    text.push(')');
    text
}

/// The longest entrypoint path a message shows whole; a longer one is cut, with its length.
const SHOWN_PATH_MAX: usize = 160;

/// `path` quoted for a message: a path of thousands of bytes (longer than any the kernel
/// resolves) is shown by its start and its length, so that the reason stays readable.
fn shown_path(path: &str) -> String {
    if path.len() <= SHOWN_PATH_MAX {
        return format!("{path:?}");
    }
    let mut end = SHOWN_PATH_MAX;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &path[..end], path.len())
}

/// What a caught panic said, for a log line or an error message.
pub fn panic_reason(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("no reason given")
}

/// Runs `work` (one event, one exit) on a thread that serves every container of the
/// process: a panic in it is logged and the thread goes on with the next one, instead of
/// ending delivery for every pod.
pub(crate) fn contain_panic(what: &str, work: impl FnOnce()) {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        tracing::error!("{what} panicked: {}; carrying on", panic_reason(&*panic));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_read_as_the_text_format_writes_them() {
        #[derive(Debug)]
        enum Ty {
            I32,
            F64,
        }
        assert_eq!(func_signature::<Ty>(&[], &[]), "(func)");
        assert_eq!(
            func_signature(&[Ty::I32, Ty::I32], &[Ty::F64]),
            "(func (param i32 i32) (result f64))"
        );
    }

    #[test]
    fn not_found_is_127_and_cannot_run_is_126() {
        let missing = WorkloadError::EntrypointNotFound {
            path: "/nope.wasm".into(),
            reason: None,
        };
        assert_eq!(exit_code_for(&missing), 127);
        assert_eq!(
            missing.to_string(),
            "entrypoint \"/nope.wasm\" not found in the container's rootfs"
        );
        let bad = WorkloadError::NotWasm {
            what: "/x.wasm".into(),
            reason: "bad magic".into(),
        };
        assert_eq!(exit_code_for(&bad), 126);
        let trap = WorkloadError::Trap {
            what: "/x.wasm".into(),
            reason: "unreachable".into(),
        };
        assert_eq!(exit_code_for(&trap), 134);
        assert_eq!(exit_code_for(&WorkloadError::NoEntrypoint), 127);
    }

    #[test]
    fn a_path_too_long_to_read_is_cut_in_the_message() {
        let path = format!("/{}", "a".repeat(5000));
        let message = WorkloadError::EntrypointNotFound {
            path,
            reason: Some("File name too long".into()),
        }
        .to_string();
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("... (5001 bytes) not found"), "{message}");
        assert!(message.ends_with(": File name too long"), "{message}");
    }
}
