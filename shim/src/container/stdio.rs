//! containerd's stdio fifos, as a container and the task service open them.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// containerd's output fifos, opened read-write so that opening never blocks on a reader.
pub(super) fn open_output(path: &Path) -> Result<Option<File>, String> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map(Some)
        .map_err(|e| format!("opening {}: {e}", path.display()))
}

/// containerd's stdin fifo: opened without waiting for a writer, then made blocking again so
/// the workload's reads wait for input.
pub(super) fn open_stdin(path: &Path) -> Result<Option<File>, String> {
    if path.as_os_str().is_empty() {
        return Ok(None);
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("opening {}: {e}", path.display()))?;
    // SAFETY: fcntl on a descriptor this function owns; F_GETFL/F_SETFL read and write only
    // its status flags.
    let cleared = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        flags >= 0 && libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) == 0
    };
    if !cleared {
        return Err(format!(
            "making {} blocking: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(Some(file))
}

/// The task service's own hold on a container's stdout and stderr fifos, from before the
/// container is built until its workload has exited.
///
/// containerd copies a fifo until no process has it open for writing. A container that is
/// built twice (libcontainer's start-up race) has its first init killed; without this hold,
/// that death could end the copy before the rebuilt container writes anything, and its
/// output would never reach `ctr` or the CRI log. Released at exit, not at delete: containerd
/// waits for the copy to finish before it deletes the task.
#[derive(Debug, Default)]
pub struct HeldOutput {
    _fifos: Vec<File>,
}

impl HeldOutput {
    pub fn open(stdout: &Path, stderr: &Path) -> Result<Self, String> {
        let fifos = [stdout, stderr]
            .into_iter()
            .filter_map(|path| open_output(path).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { _fifos: fifos })
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::test_fifo::{make as fifo, reader as open_reader};

    /// The reader sees no end of file while the hold lasts, even when every other writer
    /// has gone, and sees it once the hold is released.
    #[test]
    fn the_hold_keeps_the_copy_going_until_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        fifo(&out);
        fifo(&err);
        let mut reader = open_reader(&out);
        let held = HeldOutput::open(&out, &err).expect("hold");
        {
            let writer = open_output(&out).expect("open").expect("a path was given");
            drop(writer);
        }
        let mut buf = [0u8; 8];
        let read = reader.read(&mut buf);
        assert!(
            matches!(&read, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "expected no data and no end of file while held, got {read:?}"
        );
        drop(held);
        // The hold also opened the fifo for reading; with it gone, no writer is left.
        assert_eq!(reader.read(&mut buf).expect("end of file"), 0);
    }

    #[test]
    fn unwanted_streams_are_not_held() {
        let held = HeldOutput::open(Path::new(""), Path::new("")).expect("nothing to open");
        assert!(held._fifos.is_empty());
    }
}
