//! `wasmrunner.dev/cpu-deadline`: stop a guest once it has used its CPU time.
//!
//! A POSIX timer on the process's CPU clock (`CLOCK_PROCESS_CPUTIME_ID`) raises SIGXCPU when
//! the guest has run for its deadline; the handler moves the engine's epoch on, and the
//! guest, whose store's epoch deadline is 1, traps with `Trap::Interrupt` at its next loop
//! head or call. Time the guest spends blocked (sleeping, waiting on a socket) uses no CPU
//! and does not count. The container's init process runs one guest, so one timer per
//! process is all there is.

use std::io;
use std::sync::OnceLock;
use std::time::Duration;

use wasmtime::Engine;

/// The engine whose epoch the signal handler moves on. A signal handler can take no
/// argument: this is the one way to reach it from there.
static ENGINE: OnceLock<Engine> = OnceLock::new();

extern "C" fn on_deadline(_signal: libc::c_int) {
    // `OnceLock::get` is an atomic load and `increment_epoch` an atomic add ("signal-safe",
    // in Wasmtime's words): nothing here allocates, locks or makes a syscall.
    if let Some(engine) = ENGINE.get() {
        engine.increment_epoch();
    }
}

/// Arms the deadline: `deadline` of CPU time from now.
pub fn arm(engine: &Engine, deadline: Duration) -> io::Result<()> {
    if ENGINE.set(engine.clone()).is_err() {
        return Err(io::Error::other("a CPU deadline is armed already"));
    }
    // SAFETY: a zeroed `sigaction` is a valid empty one (no flags, empty mask); the handler
    // is an `extern "C" fn(c_int)`, the shape `sa_sigaction` takes without `SA_SIGINFO`, and
    // only does what a signal handler may (see `on_deadline`).
    let installed = unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_deadline as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGXCPU, &action, std::ptr::null_mut())
    };
    if installed != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a zeroed `sigevent` with `sigev_notify = SIGEV_SIGNAL` and a signal number is
    // a complete request; `timer` is written by the call before it is read.
    let mut timer: libc::timer_t = std::ptr::null_mut();
    let created = unsafe {
        let mut event: libc::sigevent = std::mem::zeroed();
        event.sigev_notify = libc::SIGEV_SIGNAL;
        event.sigev_signo = libc::SIGXCPU;
        libc::timer_create(libc::CLOCK_PROCESS_CPUTIME_ID, &mut event, &mut timer)
    };
    if created != 0 {
        return Err(io::Error::last_os_error());
    }
    let value = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: deadline.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: deadline.subsec_nanos().into(),
        },
    };
    // SAFETY: `timer` is the timer just created; `value` is a valid, relative expiry.
    if unsafe { libc::timer_settime(timer, 0, &value, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
