//! What a Wasm guest's init process tells the shim about its start: when the workload was
//! read, when the guest's first instruction was about to run (the guest spans of a traced
//! task, see `telemetry`), and, for a workload that could not run, why (which the shim logs
//! at error level in containerd's log, beside the same words on the container's stderr).
//!
//! The channel is a FIFO in the task's state directory (host side, under the shim's state
//! root), made by the shim at Create for every Wasm task. The shim holds its read end; the
//! builder opens the write end before libcontainer clones the init process, which inherits
//! it, and the scrub keeps it open. Why the guest cannot abuse it: a Wasm guest reaches no
//! descriptor of its process (WASI hands it only its preopens and stdio, under numbers of its
//! own). Whatever an engine that a guest escaped from wrote there, the shim reads at most
//! [`MAX_READ`] bytes, once, after the process exited; it takes only `NAME UNIX_NANOS` lines of
//! the names below for span times, and one `failed REASON` line whose printable text (at most
//! [`MAX_REASON`] bytes, never a line break) it logs as that container's own words. Nothing it
//! reads decides anything.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::served_requests::RequestLog;

/// The most the shim reads from a task's FIFO: a few lines.
const MAX_READ: usize = 1024;

/// The longest reason the shim logs for a workload that could not run.
pub const MAX_REASON: usize = 512;

const FAILED: &str = "failed";

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

/// The init process's end: writes milestones, and for a traced task holds the log of the
/// requests a server answers (`crate::served_requests`).
#[derive(Debug, Default, Clone)]
pub struct Milestones {
    fifo: Option<std::sync::Arc<File>>,
    requests: RequestLog,
}

impl Milestones {
    /// Opens the write ends of the task's FIFOs (in the builder): `path`'s, and `requests`',
    /// which only a traced task has. A FIFO that cannot be opened only costs the trace its
    /// guest spans.
    pub(crate) fn open(path: Option<&Path>, requests: Option<&Path>) -> Self {
        let fifo = path.and_then(|path| crate::sys::fifo_write_end(path, "guest milestones"));
        Self {
            fifo,
            requests: RequestLog::open(requests),
        }
    }

    /// The descriptors the init process keeps for the shim.
    pub(crate) fn raw_fds(&self) -> impl Iterator<Item = RawFd> {
        let milestones = self.fifo.as_ref().map(|fifo| fifo.as_raw_fd());
        milestones.into_iter().chain(self.requests.raw_fd())
    }

    /// Where a server tells the shim about the requests it answered (nothing when the task
    /// is not traced).
    pub fn requests(&self) -> &RequestLog {
        &self.requests
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

    /// Tells the shim why the workload could not run (the words it also wrote on its
    /// stderr). Never blocks, never fails the guest.
    pub fn failed(&self, reason: &str) {
        if let Some(mut fifo) = self.fifo.as_deref() {
            let _ = fifo.write_all(format!("{FAILED} {}\n", one_line(reason)).as_bytes());
        }
    }
}

/// `text` as one line of printable characters, at most [`MAX_REASON`] bytes.
fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len().min(MAX_REASON));
    for c in text.chars() {
        let c = if c.is_control() { ' ' } else { c };
        if line.len() + c.len_utf8() > MAX_REASON {
            break;
        }
        line.push(c);
    }
    line
}

/// What a task's init process told the shim, read once after it exited.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuestReport {
    pub marks: Vec<(Milestone, SystemTime)>,
    /// Why the workload could not run, in its own words.
    pub failure: Option<String>,
}

impl GuestReport {
    pub fn at(&self, wanted: Milestone) -> Option<SystemTime> {
        self.marks
            .iter()
            .find(|(milestone, _)| *milestone == wanted)
            .map(|(_, at)| *at)
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
        let fifo = crate::sys::fifo_read_end(&path)?;
        Ok(Self { path, fifo })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the guest's process wrote so far, without waiting.
    pub fn read(&self) -> GuestReport {
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

fn parse(bytes: &[u8]) -> GuestReport {
    let mut report = GuestReport::default();
    for line in String::from_utf8_lossy(bytes).lines() {
        let Some((name, rest)) = line.split_once(' ') else {
            continue;
        };
        if name == FAILED {
            // The first reason counts; it is cut again, whatever was written.
            report.failure.get_or_insert_with(|| one_line(rest));
            continue;
        }
        let (Some(milestone), Ok(nanos)) = (Milestone::from_name(name), rest.trim().parse()) else {
            continue;
        };
        report
            .marks
            .push((milestone, UNIX_EPOCH + Duration::from_nanos(nanos)));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task's FIFO in a temporary directory: the shim's end and the init process's.
    fn channel() -> (tempfile::TempDir, PathBuf, MilestoneReader, Milestones) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("task.milestones");
        let reader = MilestoneReader::create(path.clone()).expect("fifo");
        let writer = Milestones::open(Some(&path), None);
        (dir, path, reader, writer)
    }

    #[test]
    fn what_the_init_process_writes_the_shim_reads() {
        let (_dir, path, reader, writer) = channel();
        writer.mark(Milestone::Loaded);
        writer.mark(Milestone::Running);
        let read = reader.read();
        assert_eq!(
            read.marks.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [Milestone::Loaded, Milestone::Running]
        );
        assert!(read.marks[0].1 <= read.marks[1].1);
        assert_eq!(read.failure, None);
        drop(reader);
        assert!(!path.exists(), "the FIFO outlived its reader");
    }

    #[test]
    fn junk_is_passed_over() {
        let read = parse(b"loaded 12\nrm -rf / 3\nrunning x\nrunning 15\n\xff\xfe");
        assert_eq!(
            read.marks.iter().map(|(m, _)| *m).collect::<Vec<_>>(),
            [Milestone::Loaded, Milestone::Running]
        );
        assert_eq!(read.failure, None);
    }

    #[test]
    fn a_failure_reaches_the_shim_as_one_short_line() {
        let (_dir, _path, reader, writer) = channel();
        writer.mark(Milestone::Loaded);
        writer.failed("no export \"_start\"\nlevel=error msg=forged\t\x1b[31m");
        writer.failed("a second reason");
        let read = reader.read();
        assert_eq!(
            read.failure.as_deref(),
            Some("no export \"_start\" level=error msg=forged  [31m")
        );
        assert!(read.at(Milestone::Loaded).is_some());

        let long = "x".repeat(5 * MAX_REASON);
        let read = parse(format!("failed {long}\n").as_bytes());
        assert_eq!(read.failure.map(|r| r.len()), Some(MAX_REASON));
        // Multi-byte characters are not cut in half.
        let wide = "é".repeat(MAX_REASON);
        assert!(one_line(&wide).len() <= MAX_REASON);
    }

    #[test]
    fn nothing_to_write_to_is_fine() {
        Milestones::open(None, None).mark(Milestone::Running);
    }
}
