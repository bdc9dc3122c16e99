//! containerd's stdio fifos, as a container and the task service open them.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

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
///
/// The guest never sees these descriptors: they are the serving process's, opened after its
/// zygotes were forked, and a container's init is forked from a zygote.
#[derive(Debug, Default)]
pub struct HeldOutput {
    fifos: Vec<File>,
}

impl HeldOutput {
    pub fn open(stdout: &Path, stderr: &Path) -> Result<Self, String> {
        let fifos = [stdout, stderr]
            .into_iter()
            .filter_map(|path| open_output(path).transpose())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { fifos })
    }

    /// Lets go of the fifos, and keeps watch on those a reader still has open: what is in
    /// them then is output the reader has yet to read (see [`UnreadOutput`]).
    pub fn release(self) -> UnreadOutput {
        // A handle that neither reads nor writes: it keeps the same fifo at hand (whatever
        // its path now names) without keeping a reader's copy from ending.
        let handles: Vec<File> = self
            .fifos
            .iter()
            .filter_map(|fifo| reopen(fifo, libc::O_PATH, false))
            .collect();
        drop(self.fifos);
        // Opening a fifo to write without blocking fails (ENXIO) when nobody reads it: then
        // nobody waits for what is in it either (`ctr run -d`, a reader that died).
        let read = handles
            .iter()
            .filter_map(|handle| reopen(handle, libc::O_NONBLOCK, true))
            .collect();
        UnreadOutput { fifos: read }
    }
}

/// `file` opened anew through `/proc/self/fd`, with `flags`, for writing when `write`.
fn reopen(file: &File, flags: libc::c_int, write: bool) -> Option<File> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(flags)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
}

/// A workload's output fifos, after it exited, that a reader still has open.
///
/// A containerd client closes its ends of the fifos once it hears of the exit (`task.Delete`
/// cancels its IO before waiting on it): whatever is still in them then is lost. So the exit
/// is told only once they are read ([`UnreadOutput::read`]). The descriptors here are opened
/// for writing, and nothing is written through them; closing them lets the reader's copy end.
#[derive(Debug, Default)]
pub struct UnreadOutput {
    fifos: Vec<File>,
}

/// How long [`UnreadOutput::read`] waits for a reader that reads nothing more. One that is
/// merely slow (a loaded node, a `ctr` whose own stdout is a slow pipe) reads within this;
/// one that reads nothing for this long is wedged.
pub const OUTPUT_STALL: Duration = Duration::from_secs(2);

impl UnreadOutput {
    /// How many bytes are in the fifos, written and not yet read.
    pub fn bytes(&self) -> usize {
        self.fifos
            .iter()
            .map(|fifo| {
                let mut bytes: libc::c_int = 0;
                // SAFETY: FIONREAD on a fifo this value owns only writes the number of bytes
                // in the pipe into `bytes`, a local that outlives the call.
                let asked = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut bytes) };
                if asked == 0 {
                    usize::try_from(bytes).unwrap_or(0)
                } else {
                    0
                }
            })
            .sum()
    }

    /// Waits until the fifos are empty, or their reader has read nothing for `stall`.
    pub async fn read(self, stall: Duration) -> Result<(), usize> {
        let mut left = self.bytes();
        let mut pause = Duration::from_millis(1);
        let mut last_read = tokio::time::Instant::now();
        while left > 0 {
            if last_read.elapsed() >= stall {
                return Err(left);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
            let now = self.bytes();
            if now < left {
                last_read = tokio::time::Instant::now();
            }
            left = now;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::test_fifo::{make as fifo, reader as open_reader};

    /// The reader sees no end of file while the hold lasts, even when every other writer
    /// has gone, and sees it once the hold is released.
    #[test]
    fn the_hold_keeps_the_copy_going_until_released() {
        let (_dir, out, err) = stdio_fifos();
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

    /// A task's stdout and stderr fifos, in a directory that lasts as long as the first value.
    fn stdio_fifos() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        fifo(&out);
        fifo(&err);
        (dir, out, err)
    }

    /// Writes `text` into the fifo at `path`, as a workload does; the writer stays open when
    /// returned.
    fn write_to(path: &Path, text: &[u8]) -> File {
        let mut writer = open_output(path).expect("open").expect("a path was given");
        writer.write_all(text).expect("write");
        writer
    }

    /// Released, the hold counts what is written and not yet read, in every fifo a reader
    /// has open, until the reader reads it; then the reader sees the end of the file.
    #[test]
    fn unread_output_is_counted_until_read() {
        let (_dir, out, err) = stdio_fifos();
        let mut out_reader = open_reader(&out);
        let mut err_reader = open_reader(&err);
        let held = HeldOutput::open(&out, &err).expect("hold");
        write_to(&out, b"stdout!");
        write_to(&err, b"stderr");
        let unread = held.release();
        assert_eq!(unread.bytes(), 13);
        let mut buf = [0u8; 4];
        out_reader.read_exact(&mut buf).expect("read");
        assert_eq!(unread.bytes(), 9);
        let mut rest = Vec::new();
        err_reader.read_to_end(&mut rest).ok();
        assert_eq!(rest, b"stderr");
        assert_eq!(unread.bytes(), 3);
        drop(unread);
        let mut rest = Vec::new();
        out_reader.read_to_end(&mut rest).expect("to the end");
        assert_eq!(rest, b"ut!");
    }

    /// A fifo nobody reads any more is not waited on: what is left in it has nobody to go to.
    #[test]
    fn output_nobody_reads_is_not_waited_for() {
        let (_dir, out, err) = stdio_fifos();
        let reader = open_reader(&out);
        let held = HeldOutput::open(&out, &err).expect("hold");
        drop(write_to(&out, b"never read"));
        drop(reader);
        let unread = held.release();
        assert_eq!(unread.bytes(), 0);
        assert!(unread.fifos.is_empty(), "a fifo without a reader was kept");
    }

    /// A reader that stops reading is waited for no longer than the stall time.
    #[test]
    fn a_reader_that_stops_is_not_waited_for_long() {
        let (_dir, out, err) = stdio_fifos();
        let _reader = open_reader(&out);
        let held = HeldOutput::open(&out, &err).expect("hold");
        let _writer = write_to(&out, b"unread");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let started = std::time::Instant::now();
        let waited = runtime.block_on(held.release().read(Duration::from_millis(100)));
        assert_eq!(waited, Err(6));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn unwanted_streams_are_not_held() {
        let held = HeldOutput::open(Path::new(""), Path::new("")).expect("nothing to open");
        assert!(held.fifos.is_empty());
    }
}
