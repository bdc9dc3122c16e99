//! System calls the shim needs with care, in one place each: `openat2` (paths resolved
//! under the kernel's rules, not the caller's), an exclusive `flock` on a lock file, a FIFO's
//! making, and what the kernel says of a socket.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The kernel's `struct open_how` (version 0, 24 bytes): `libc::open_how` cannot be built
/// outside libc.
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// `openat2(dir, path, flags, resolve)` for reading (`flags` adds to `O_RDONLY |
/// O_CLOEXEC | O_NOCTTY | O_NONBLOCK`, so a FIFO never blocks the open). `None` when
/// nothing is found there or a link on the way is refused (`ENOENT`, `ENOTDIR`, `ELOOP`,
/// `EACCES`, `EXDEV`).
pub fn openat2_read(
    dir: RawFd,
    path: &Path,
    flags: i32,
    resolve: u64,
) -> std::io::Result<Option<File>> {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(None);
    };
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK | flags)
            as u64,
        mode: 0,
        resolve,
    };
    // SAFETY: openat2 reads the NUL-terminated path and the `open_how` of the size given,
    // both alive for the call, and returns a new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c_path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EACCES | libc::EXDEV) => {
                Ok(None)
            }
            _ => Err(err),
        };
    }
    // SAFETY: `fd` was just returned by openat2 and is owned by nobody else.
    Ok(Some(unsafe { File::from_raw_fd(fd as i32) }))
}

/// Opens the write end of the FIFO `path` without blocking, for `what` (a debug line says why
/// not, when not): `None` when it cannot be opened, which costs its reader only what it would
/// have been told.
pub fn fifo_write_end(path: &Path, what: &str) -> Option<std::sync::Arc<File>> {
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .inspect_err(|e| tracing::debug!("no {what} ({}): {e}", path.display()))
        .ok()
        .map(std::sync::Arc::new)
}

/// Makes the FIFO `path` (owner-only; one left by an earlier run is replaced) and opens its
/// read end, without blocking and not inherited by children. A writer can open it from then on.
pub fn fifo_read_end(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a NUL-terminated path that lives across the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

/// An exclusive `flock` on a lock file (created, mode 0600, if missing), shared by every
/// process of the node, released when dropped; the empty file stays.
pub struct ExclusiveLock {
    /// Holding the descriptor holds the lock; closing it releases it.
    _file: File,
}

impl ExclusiveLock {
    /// Blocks until the lock on `path` is this process's.
    pub fn take(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)?;
        // SAFETY: flock on a descriptor this function owns; it blocks until the lock is ours.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self { _file: file })
    }
}

/// Sets this thread's name, the process's `comm` when called on its main thread (what `ps`
/// shows): the first 15 bytes of `name`, without NUL bytes.
pub fn set_process_name(name: &str) {
    let mut comm = [0u8; 16];
    for (slot, byte) in comm
        .iter_mut()
        .zip(name.bytes().filter(|b| *b != 0).take(15))
    {
        *slot = byte;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes; `comm` is 16
    // bytes and its last one is always 0.
    unsafe {
        libc::prctl(libc::PR_SET_NAME, comm.as_ptr(), 0, 0, 0);
    }
}

/// This process's open descriptors that are sockets.
pub fn socket_fds() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    // Collected first: the directory's own descriptor is open while it is read.
    let fds: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.into_iter()
        .filter(|&fd| {
            // SAFETY: `stat` is plain data, for which all-zero bytes are a valid value.
            let mut stat: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat writes into `stat`, a stat buffer of the right type; a descriptor
            // closed since the listing makes it fail, which reads as "not a socket".
            let found = unsafe { libc::fstat(fd, &mut stat) } == 0;
            found && stat.st_mode & libc::S_IFMT == libc::S_IFSOCK
        })
        .collect()
}

/// Whether socket `fd` is listening for connections (`SO_ACCEPTCONN`).
pub fn is_listening(fd: i32) -> bool {
    let mut listening: libc::c_int = 0;
    // SAFETY: SO_ACCEPTCONN is a c_int, for which any bytes are a valid value.
    let read = unsafe { socket_option(fd, libc::SO_ACCEPTCONN, &mut listening) };
    read && listening != 0
}

/// The pid of the process that made unix socket `fd` (with `socketpair`) or, for a
/// connected socket, of its peer (`SO_PEERCRED`); `None` when that cannot be read.
pub fn socket_creator(fd: i32) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    // SAFETY: SO_PEERCRED is a ucred, three integers for which any bytes are a valid value.
    let read = unsafe { socket_option(fd, libc::SO_PEERCRED, &mut cred) };
    (read && cred.pid > 0).then_some(cred.pid as u32)
}

/// Reads the `SOL_SOCKET` option `option` of `fd` into `value`; false when it cannot be read
/// (`fd` is no socket, say), and `value` is then as it was.
///
/// # Safety
/// `T` must be the type the kernel writes for `option`, and plain data for which any bytes
/// are a valid value: the kernel writes at most `size_of::<T>()` bytes into it.
unsafe fn socket_option<T>(fd: i32, option: libc::c_int, value: &mut T) -> bool {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`, a live, exclusive `T` of
    // that size; that any such bytes make a valid `T` is the caller's promise.
    unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (value as *mut T).cast(),
            &mut len,
        ) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a listening socket counts: not a connected pair (the zygote's channel), not a file.
    #[test]
    fn only_a_listening_socket_is_listening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s")).expect("bind");
        let (one, _other) = std::os::unix::net::UnixStream::pair().expect("pair");
        let file = File::open("/dev/null").expect("open");
        assert!(is_listening(listener.as_raw_fd()));
        assert!(!is_listening(one.as_raw_fd()));
        assert!(!is_listening(file.as_raw_fd()));
    }
}
