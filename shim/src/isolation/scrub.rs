//! The process a guest runs in, emptied of the shim: descriptors, environment, command line.

use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use super::IsolationError;

/// Where the kernel keeps this process's command line and environment strings: the byte
/// ranges `/proc/PID/cmdline` and `/proc/PID/environ` read. Every fork of the shim has the
/// same layout, so the builder (which can still read `/proc`) reads it for the container's
/// init process, which cannot once `/proc` is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStrings {
    args: (usize, usize),
    env: (usize, usize),
}

impl ProcessStrings {
    /// This process's ranges, from `/proc/self/stat`.
    pub fn of_this_process() -> Result<Self, IsolationError> {
        let stat = std::fs::read_to_string("/proc/self/stat")
            .map_err(|e| IsolationError::ProcessLayout(e.to_string()))?;
        Self::parse(&stat).ok_or_else(|| {
            IsolationError::ProcessLayout("no arg_start..env_end fields".to_string())
        })
    }

    /// Fields 48 to 51 of `/proc/PID/stat` (proc(5)): arg_start, arg_end, env_start,
    /// env_end. The second field (the command name) may hold spaces and parentheses, so
    /// counting starts after its last `)`.
    fn parse(stat: &str) -> Option<Self> {
        let (_, after_comm) = stat.rsplit_once(')')?;
        // After the command name come field 3 (state) onwards.
        let fields: Vec<usize> = after_comm
            .split_ascii_whitespace()
            .skip(45)
            .take(4)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [arg_start, arg_end, env_start, env_end] = fields[..] else {
            return None;
        };
        (arg_start <= arg_end && env_start <= env_end).then_some(Self {
            args: (arg_start, arg_end),
            env: (env_start, env_end),
        })
    }
}

/// What the guest's process keeps of what the shim gave it.
pub struct Scrub<'a> {
    /// The memory layout read in the builder (see [`ProcessStrings`]).
    pub strings: ProcessStrings,
    /// The container's command line and environment (`NAME=value`), from its OCI spec.
    pub args: &'a [String],
    pub env: &'a [String],
    /// The descriptors above stderr that stay open: the workload's compiled code and the
    /// write end of its milestones FIFO (see `crate::milestones`).
    pub keep_fds: Vec<RawFd>,
}

impl Scrub<'_> {
    /// Runs in the container's init process, single-threaded, just before the engine. After
    /// it the process holds stdin, stdout, stderr and `keep_fds` only; its environment is
    /// empty (the guest gets the container's env through WASI, not from the process); what
    /// `/proc/PID/cmdline` and `environ` show is the container's args and env (as much of
    /// them as fits where the shim's were, whole entries only); its name (`comm`) is the
    /// entrypoint's file name; and it is not dumpable, so nothing else in a shared PID
    /// namespace can attach to it or read its memory.
    pub fn apply(&self) -> Result<(), IsolationError> {
        close_descriptors_except(&self.keep_fds)?;
        // SAFETY: the container's init process has one thread, so no other thread reads the
        // environment while it is cleared.
        unsafe {
            libc::clearenv();
        }
        // SAFETY: `strings` was read from /proc/self/stat in the builder, of which this
        // process is a fork with the same memory layout: both ranges are mapped, writable
        // stack memory of this process. After `clearenv` nothing refers to the environment
        // strings, and the argument strings are only read through std's saved `argv`, which
        // nothing calls from here on.
        unsafe {
            overwrite(self.strings.args, self.args);
            overwrite(self.strings.env, self.env);
        }
        set_name(self.args.first().map(String::as_str).unwrap_or("wasm"));
        // SAFETY: prctl(PR_SET_DUMPABLE) only changes a flag of this process.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        }
        Ok(())
    }
}

/// Closes every descriptor from 3 up, except `keep`.
fn close_descriptors_except(keep: &[RawFd]) -> Result<(), IsolationError> {
    let mut kept: Vec<u32> = keep
        .iter()
        .filter_map(|&fd| u32::try_from(fd).ok())
        .filter(|&fd| fd >= 3)
        .collect();
    kept.sort_unstable();
    kept.dedup();
    // The gaps between the kept descriptors, from 3 up.
    let mut ranges = Vec::with_capacity(kept.len() + 1);
    let mut first = 3u32;
    for fd in kept {
        if fd > first {
            ranges.push((first, fd - 1));
        }
        first = fd + 1;
    }
    ranges.push((first, u32::MAX));
    for (first, last) in ranges {
        // SAFETY: close_range closes descriptors of this process only. The Rust objects that
        // still name some of them (libcontainer's channels, the zygote's sockets) are never
        // used again: the init process runs the engine and exits without returning.
        let closed = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0) };
        if closed != 0 {
            return Err(IsolationError::CloseDescriptors(
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

/// Fills `[start, end)` with as many whole NUL-terminated `entries` as fit, then zeros.
///
/// # Safety
/// `[start, end)` must be writable memory of this process that nothing else refers to.
unsafe fn overwrite((start, end): (usize, usize), entries: &[String]) {
    let len = end.saturating_sub(start);
    if start == 0 || len == 0 {
        return;
    }
    let packed = pack(entries, len);
    // SAFETY: the caller guarantees the range; `packed` is exactly `len` bytes.
    unsafe {
        std::ptr::copy_nonoverlapping(packed.as_ptr(), start as *mut u8, len);
    }
}

/// `entries`, each followed by a NUL, cut after the last whole entry that fits in `len`
/// bytes, then padded with NULs to `len`.
fn pack(entries: &[String], len: usize) -> Vec<u8> {
    let mut packed = Vec::with_capacity(len);
    for entry in entries {
        if packed.len() + entry.len() + 1 > len {
            break;
        }
        packed.extend_from_slice(entry.as_bytes());
        packed.push(0);
    }
    packed.resize(len, 0);
    packed
}

/// Names the process after the file it runs, as `execve` would (15 bytes at most).
fn set_name(arg0: &str) {
    let path = arg0.split_once('#').map_or(arg0, |(path, _)| path);
    crate::sys::set_process_name(path.rsplit('/').next().unwrap_or(path));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_read_after_the_command_name() {
        // A command name with a space and a parenthesis, then 49 more fields.
        let mut stat = "1234 (a) b) S".to_string();
        for field in 4..=52 {
            stat.push_str(&format!(" {}", field * 10));
        }
        let strings = ProcessStrings::parse(&stat).expect("parsed");
        assert_eq!(strings.args, (480, 490));
        assert_eq!(strings.env, (500, 510));
        assert!(ProcessStrings::parse("1 (x) S 1 2 3").is_none());
    }

    #[test]
    fn this_process_has_a_layout() {
        let strings = ProcessStrings::of_this_process().expect("layout");
        assert!(strings.args.0 > 0 && strings.args.0 < strings.args.1);
        assert!(strings.env.0 >= strings.args.1);
    }

    #[test]
    fn entries_that_do_not_fit_are_left_out_whole() {
        let entries = ["A=1".to_string(), "LONG=123456".to_string()];
        assert_eq!(pack(&entries, 6), b"A=1\0\0\0");
        assert_eq!(pack(&entries, 16), b"A=1\0LONG=123456\0");
        assert_eq!(pack(&[], 3), b"\0\0\0");
    }
}
