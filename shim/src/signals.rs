//! Signal handling inside the container's init process.
//!
//! The workload runs as PID 1 of its PID namespace, and the kernel drops signals sent to a
//! namespace's PID 1 when it has no handler for them. A Wasm guest cannot install handlers
//! (WASI has no signals), so without this `ctr task kill` (SIGTERM) and a pod's grace period
//! would do nothing until SIGKILL. A container whose guest is told to stop exits with
//! 128 + the signal number, the status a shell reports for a process killed by that signal.

/// The signals that ask a process to stop.
const TERMINATION_SIGNALS: [libc::c_int; 4] =
    [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

extern "C" fn exit_with_signal_status(signal: libc::c_int) {
    // SAFETY: `_exit` is async-signal-safe (POSIX.1-2017 2.4.3) and touches no state of
    // this process that the interrupted code could be holding.
    unsafe { libc::_exit(128 + signal) }
}

/// Makes SIGTERM, SIGINT, SIGHUP and SIGQUIT end this process with status 128 + signal.
/// Call it in the container's init process, just before the guest runs.
pub fn exit_on_termination_signals() -> std::io::Result<()> {
    for signal in TERMINATION_SIGNALS {
        // SAFETY: `sigaction` is given a zeroed (valid, empty-mask) struct whose handler is an
        // `extern "C" fn(c_int)` that only calls the async-signal-safe `_exit`.
        let installed = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_with_signal_status as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if installed != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives SIGTERM back its default action, for a workload that handles it itself (a server
/// that drains its requests before it exits). Call it before installing that handler: a
/// handler registered on top of [`exit_on_termination_signals`]'s would still end the
/// process at once.
pub fn release_sigterm() -> std::io::Result<()> {
    // SAFETY: `signal` with `SIG_DFL` installs no code of ours: the kernel's default action.
    if unsafe { libc::signal(libc::SIGTERM, libc::SIG_DFL) } == libc::SIG_ERR {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
