//! When a Wasm guest got going, told by the container's init process to the shim, for the
//! spans of a traced task (see `telemetry`): when the workload was read and when the guest's
//! first instruction was about to run.
//!
//! The channel is a FIFO in the task's state directory (host side, under the shim's state
//! root), made by the shim at Create only when tracing is on. The shim holds its read end;
//! the builder opens the write end before libcontainer clones the init process, which
//! inherits it, and the scrub keeps it open. Why the guest cannot abuse it: a Wasm guest
//! reaches no descriptor of its process (WASI hands it only its preopens and stdio, under
//! numbers of its own); and whatever an engine that a guest escaped from wrote there, the
//! shim reads at most [`MAX_READ`] bytes, only as `NAME UNIX_NANOS` lines of the names
//! below, and only for span times: nothing it reads decides anything.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most the shim reads from a task's FIFO: a few lines.
const MAX_READ: usize = 256;

/// A moment in a guest's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// The init process has read the workload (its bytes, args, env and policy).
    Loaded,
    /// The engine compiled or mapped and instantiated the guest, and is about to run its
    /// first instruction (a server: about to take its first request).
    Running,
}

impl Milestone {
    fn name(self) -> &'static str {
        match self {
            Milestone::Loaded => "loaded",
            Milestone::Running => "running",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [Milestone::Loaded, Milestone::Running]
            .into_iter()
            .find(|m| m.name() == name)
    }
}

/// The init process's end: writes milestones, or nothing when the task is not traced.
#[derive(Debug, Default, Clone)]
pub struct Milestones {
    fifo: Option<std::sync::Arc<File>>,
}

impl Milestones {
    /// Opens the write end of the task's FIFO (in the builder); a FIFO that cannot be
    /// opened only costs the trace its guest spans.
    pub(crate) fn open(path: Option<&Path>) -> Self {
        let fifo = path.and_then(|path| {
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .inspect_err(|e| tracing::debug!("no guest milestones ({}): {e}", path.display()))
                .ok()
                .map(std::sync::Arc::new)
        });
        Self { fifo }
    }

    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        self.fifo.as_ref().map(|fifo| fifo.as_raw_fd())
    }

    /// Records `milestone` as now. Never blocks, never fails the guest.
    pub fn mark(&self, milestone: Milestone) {
        if let Some(mut fifo) = self.fifo.as_deref() {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let _ = fifo.write_all(format!("{} {nanos}\n", milestone.name()).as_bytes());
        }
    }
}

/// The shim's end of a task's FIFO.
#[derive(Debug)]
pub struct MilestoneReader {
    path: PathBuf,
    fifo: File,
}

impl MilestoneReader {
    /// Makes the FIFO `path` (owner-only) and opens its read end, which must be open before
    /// the builder opens the write end.
    pub fn create(path: PathBuf) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(&path);
        let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        // SAFETY: `c_path` is a NUL-terminated path that lives across the call.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)?;
        Ok(Self { path, fifo })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the guest's process wrote so far, without waiting.
    pub fn read(&self) -> Vec<(Milestone, SystemTime)> {
        let mut buffer = [0u8; MAX_READ];
        let mut filled = 0;
        while filled < MAX_READ {
            match (&self.fifo).read(&mut buffer[filled..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => filled += n,
            }
        }
        parse(&buffer[..filled])
    }
}

impl Drop for MilestoneReader {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn parse(bytes: &[u8]) -> Vec<(Milestone, SystemTime)> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|line| {
            let (name, nanos) = line.split_once(' ')?;
            let nanos: u64 = nanos.trim().parse().ok()?;
            Some((
                Milestone::from_name(name)?,
                UNIX_EPOCH + Duration::from_nanos(nanos),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_init_process_writes_the_shim_reads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("task.milestones");
        let reader = MilestoneReader::create(path.clone()).expect("fifo");
        let writer = Milestones::open(Some(&path));
        writer.mark(Milestone::Loaded);
        writer.mark(Milestone::Running);
        let read = reader.read();
        assert_eq!(
            read.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [Milestone::Loaded, Milestone::Running]
        );
        assert!(read[0].1 <= read[1].1);
        drop(reader);
        assert!(!path.exists(), "the FIFO outlived its reader");
    }

    #[test]
    fn junk_is_passed_over() {
        let read = parse(b"loaded 12\nrm -rf / 3\nrunning x\nrunning 15\n\xff\xfe");
        assert_eq!(
            read.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [Milestone::Loaded, Milestone::Running]
        );
    }

    #[test]
    fn nothing_to_write_to_is_fine() {
        Milestones::open(None).mark(Milestone::Running);
    }
}
