//! Fifos for unit tests, as containerd makes them for a task's stdio and log.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn make(path: &Path) {
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL in a temp path");
    // SAFETY: mkfifo reads a NUL-terminated path that outlives the call.
    let made = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(made, 0, "mkfifo: {}", std::io::Error::last_os_error());
}

/// The read end, opened without waiting for a writer, as containerd opens it.
pub fn reader(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .expect("reader")
}
