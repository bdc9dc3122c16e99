//! Watching a cgroup for the OOM killer: v1 through an eventfd registered in
//! `cgroup.event_control`, v2 through inotify on `memory.events`.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::CgroupError;
use super::metrics::v2_oom_kill_count;

/// A running OOM watch (see [`super::ContainerCgroup::watch_oom`]).
///
/// Dropping it stops the watch without waiting for the thread: a call of the callback that is
/// under way completes, and no further call starts. The watch also ends by itself when the
/// cgroup is removed.
#[derive(Debug)]
pub struct OomWatch {
    stop: Arc<File>,
    thread: Option<JoinHandle<()>>,
}

impl OomWatch {
    /// Whether the watch thread has ended (the cgroup was removed, or the watch was stopped,
    /// or it failed; failures are logged).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the watch and waits for its thread to end, including a call of the callback that
    /// is under way and one for an OOM already signalled. Called from within the callback
    /// itself, it does not wait.
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(thread) = self.thread.take()
            && thread.thread().id() != std::thread::current().id()
        {
            // A panic in the callback has already been reported by the panic hook.
            let _ = thread.join();
        }
    }

    fn signal_stop(&self) {
        if let Err(error) = (&*self.stop).write_all(&1u64.to_ne_bytes()) {
            tracing::warn!(%error, "cannot signal the OOM watch thread to stop");
        }
    }
}

impl Drop for OomWatch {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.signal_stop();
        }
    }
}

pub(super) fn watch_v1(
    memory_dir: &Path,
    on_oom: impl Fn() + Send + 'static,
) -> Result<OomWatch, CgroupError> {
    let identity = DirIdentity::of(memory_dir)?;
    let oom_control_path = memory_dir.join("memory.oom_control");
    let oom_control = File::open(&oom_control_path).map_err(|source| CgroupError::Read {
        path: oom_control_path,
        source,
    })?;
    let events = eventfd()?;
    let event_control = memory_dir.join("cgroup.event_control");
    std::fs::write(
        &event_control,
        format!("{} {}", events.as_raw_fd(), oom_control.as_raw_fd()),
    )
    .map_err(|source| CgroupError::Write {
        path: event_control,
        source,
    })?;
    // The kernel keeps the eventfd, not memory.oom_control: it may be closed now.
    drop(oom_control);

    let stop = Arc::new(eventfd()?);
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new()
        .name("cgroup-oom-v1".into())
        .spawn(move || run_v1(&identity, &events, &thread_stop, on_oom))
        .map_err(|source| CgroupError::Os {
            call: "spawning the OOM watch thread",
            source,
        })?;
    Ok(OomWatch {
        stop,
        thread: Some(thread),
    })
}

fn run_v1(identity: &DirIdentity, events: &File, stop: &File, on_oom: impl Fn()) {
    let mut stopping = false;
    loop {
        let Some(fired) = next_wake(events, stop, &mut stopping) else {
            return;
        };
        if !fired {
            continue;
        }
        let count = match read_counter(events) {
            Ok(Some(count)) => count,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "OOM watch: reading the eventfd failed; watch ends");
                return;
            }
        };
        if !identity.still_exists() {
            // The kernel signals once more when the cgroup is removed; anything beyond that
            // one was an OOM that happened just before.
            if count > 1 {
                on_oom();
            }
            tracing::debug!(dir = %identity.path.display(), "cgroup removed; OOM watch ends");
            return;
        }
        on_oom();
    }
}

pub(super) fn watch_v2(
    dir: &Path,
    on_oom: impl Fn() + Send + 'static,
) -> Result<OomWatch, CgroupError> {
    let identity = DirIdentity::of(dir)?;
    let events_path = dir.join("memory.events");
    let inotify = inotify_init()?;
    let events_watch = match add_watch(&inotify, &events_path, libc::IN_MODIFY) {
        Ok(wd) => wd,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(CgroupError::NoMemoryController);
        }
        Err(source) => {
            return Err(CgroupError::Os {
                call: "inotify_add_watch(memory.events)",
                source,
            });
        }
    };
    // Removing a cgroup produces no inotify event on its own files or directory (kernfs), but
    // rmdir(2) reports IN_DELETE on the parent directory.
    let parent_watch = match (dir.parent(), dir.file_name()) {
        (Some(parent), Some(name)) => {
            let wd = add_watch(&inotify, parent, libc::IN_DELETE | libc::IN_ONLYDIR).map_err(
                |source| CgroupError::Os {
                    call: "inotify_add_watch(parent directory)",
                    source,
                },
            )?;
            Some((wd, name.as_bytes().to_vec()))
        }
        _ => None,
    };
    // Read after the watch is in place, so that no increase can fall in between.
    let last = v2_oom_kill_count(&events_path)?.unwrap_or(0);

    let stop = Arc::new(eventfd()?);
    let thread_stop = Arc::clone(&stop);
    let state = V2State {
        identity,
        events_path,
        events_watch,
        parent_watch,
        last,
    };
    let thread = std::thread::Builder::new()
        .name("cgroup-oom-v2".into())
        .spawn(move || run_v2(state, &inotify, &thread_stop, on_oom))
        .map_err(|source| CgroupError::Os {
            call: "spawning the OOM watch thread",
            source,
        })?;
    Ok(OomWatch {
        stop,
        thread: Some(thread),
    })
}

struct V2State {
    identity: DirIdentity,
    events_path: PathBuf,
    events_watch: i32,
    /// The parent directory's watch, and the cgroup's name in it.
    parent_watch: Option<(i32, Vec<u8>)>,
    /// The last `oom_kill` count seen.
    last: u64,
}

fn run_v2(mut state: V2State, inotify: &File, stop: &File, on_oom: impl Fn()) {
    // Removal raced with setting up the watches.
    if !state.identity.still_exists() {
        return;
    }
    let mut buffer = vec![0u8; 4096];
    let mut stopping = false;
    loop {
        let Some(ready) = next_wake(inotify, stop, &mut stopping) else {
            return;
        };
        if !ready {
            continue;
        }
        let length = match (&*inotify).read(&mut buffer) {
            Ok(length) => length,
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(error) => {
                tracing::warn!(%error, "OOM watch: reading inotify failed; watch ends");
                return;
            }
        };
        let mut modified = false;
        let mut removed = false;
        for event in InotifyEvents(buffer.get(..length).unwrap_or_default()) {
            if event.mask & libc::IN_Q_OVERFLOW != 0 {
                modified = true;
                removed |= !state.identity.still_exists();
            } else if event.wd == state.events_watch {
                modified |= event.mask & libc::IN_MODIFY != 0;
                removed |= event.mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF) != 0;
            } else if let Some((wd, name)) = &state.parent_watch
                && event.wd == *wd
            {
                removed |= event.mask & libc::IN_IGNORED != 0
                    || (event.mask & libc::IN_DELETE != 0 && event.name == name.as_slice());
            }
        }
        if modified {
            match v2_oom_kill_count(&state.events_path) {
                Ok(Some(count)) => {
                    for _ in state.last..count {
                        on_oom();
                    }
                    state.last = state.last.max(count);
                }
                Ok(None) => {}
                Err(error) => {
                    if state.identity.still_exists() {
                        tracing::warn!(%error, "OOM watch: cannot read memory.events");
                    } else {
                        removed = true;
                    }
                }
            }
        }
        if removed {
            tracing::debug!(dir = %state.identity.path.display(), "cgroup removed; OOM watch ends");
            return;
        }
    }
}

/// A directory and the inode it had when the watch started, so that a cgroup removed and
/// created again under the same name is not taken for the one watched.
struct DirIdentity {
    path: PathBuf,
    device: u64,
    inode: u64,
}

impl DirIdentity {
    fn of(path: &Path) -> Result<Self, CgroupError> {
        let metadata = std::fs::metadata(path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                CgroupError::Removed {
                    path: path.to_owned(),
                }
            } else {
                CgroupError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Ok(DirIdentity {
            path: path.to_owned(),
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }

    fn still_exists(&self) -> bool {
        std::fs::metadata(&self.path).is_ok_and(|m| m.dev() == self.device && m.ino() == self.inode)
    }
}

struct InotifyEvent<'a> {
    wd: i32,
    mask: u32,
    name: &'a [u8],
}

/// The events in a buffer filled by `read(2)` on an inotify descriptor.
struct InotifyEvents<'a>(&'a [u8]);

impl<'a> Iterator for InotifyEvents<'a> {
    type Item = InotifyEvent<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        // struct inotify_event { int wd; uint32_t mask; uint32_t cookie; uint32_t len; char name[]; }
        const HEADER: usize = 16;
        let field = |at: usize| -> Option<[u8; 4]> { self.0.get(at..at + 4)?.try_into().ok() };
        let wd = i32::from_ne_bytes(field(0)?);
        let mask = u32::from_ne_bytes(field(4)?);
        let length = usize::try_from(u32::from_ne_bytes(field(12)?)).ok()?;
        let name = self.0.get(HEADER..HEADER + length)?;
        let name_end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        let event = InotifyEvent {
            wd,
            mask,
            name: name.get(..name_end).unwrap_or_default(),
        };
        self.0 = self.0.get(HEADER + length..).unwrap_or_default();
        Some(event)
    }
}

fn eventfd() -> Result<File, CgroupError> {
    // SAFETY: eventfd takes no pointers; the result is checked before it is used.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(CgroupError::Os {
            call: "eventfd",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a descriptor just created for us, open and owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn inotify_init() -> Result<File, CgroupError> {
    // SAFETY: inotify_init1 takes no pointers; the result is checked before it is used.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
    if fd < 0 {
        return Err(CgroupError::Os {
            call: "inotify_init1",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a descriptor just created for us, open and owned by nothing else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn add_watch(inotify: &File, path: &Path, mask: u32) -> io::Result<i32> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: the descriptor is open (borrowed from `inotify`) and `path` is a NUL-terminated
    // string that outlives the call.
    let wd = unsafe { libc::inotify_add_watch(inotify.as_raw_fd(), path.as_ptr(), mask) };
    if wd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(wd)
    }
}

/// Sleeps until `events` or `stop` is readable (or in error); returns which.
/// Sleeps until the watch has something to do: `Some(true)` when `events` is readable,
/// `Some(false)` on a wake with nothing to read, `None` when the watch must end (asked to
/// stop, or polling failed).
/// Waits for the next event or the stop signal. An event that is already there when the
/// watch is stopped is still handed out, once: the OOM kill that ended a container is
/// reported even when the container's exit (which stops the watch) is handled before the
/// watch thread woke for it. `stopping` remembers that the stop was seen.
fn next_wake(events: &File, stop: &File, stopping: &mut bool) -> Option<bool> {
    if *stopping {
        return None;
    }
    match wait_readable(events, stop) {
        Ok((fired, true)) => {
            *stopping = true;
            fired.then_some(true)
        }
        Ok((fired, false)) => Some(fired),
        Err(error) => {
            tracing::warn!(%error, "OOM watch: poll failed; watch ends");
            None
        }
    }
}

fn wait_readable(events: &File, stop: &File) -> io::Result<(bool, bool)> {
    let mut fds = [
        libc::pollfd {
            fd: events.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let ready = |fd: &libc::pollfd| {
        fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
    };
    loop {
        // SAFETY: `fds` is an array of two initialised pollfd that lives across the call, and
        // its length is passed with it; both descriptors are open (borrowed from live Files).
        let result = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if result < 0 {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(error);
        }
        if fds.iter().any(|fd| fd.revents & libc::POLLNVAL != 0) {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        return Ok((ready(&fds[0]), ready(&fds[1])));
    }
}

/// Reads and resets an eventfd counter; `None` if it was zero after all.
fn read_counter(eventfd: &File) -> io::Result<Option<u64>> {
    let mut value = [0u8; 8];
    match (&*eventfd).read(&mut value) {
        Ok(8) => Ok(Some(u64::from_ne_bytes(value))),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "short read from an eventfd",
        )),
        Err(error)
            if matches!(
                error.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// The OOM that killed a container is signalled before its exit stops the watch: an event
    /// pending at the stop is still handed out, once, and then the watch ends.
    #[test]
    fn an_event_pending_at_stop_is_handed_out_once() {
        let signal = |fd: &File| (&*fd).write_all(&1u64.to_ne_bytes()).expect("signal");
        let (events, stop) = (eventfd().expect("eventfd"), eventfd().expect("eventfd"));
        signal(&events);
        signal(&stop);
        let mut stopping = false;
        assert_eq!(next_wake(&events, &stop, &mut stopping), Some(true));
        assert_eq!(next_wake(&events, &stop, &mut stopping), None);
        let quiet = eventfd().expect("eventfd");
        let mut stopping = false;
        assert_eq!(next_wake(&quiet, &stop, &mut stopping), None);
    }

    fn wait_until(what: &str, condition: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn inotify_event(wd: i32, mask: u32, name: &[u8]) -> Vec<u8> {
        let padded = if name.is_empty() { 0 } else { name.len() + 4 };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&wd.to_ne_bytes());
        bytes.extend_from_slice(&mask.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes());
        bytes.extend_from_slice(&u32::try_from(padded).expect("small").to_ne_bytes());
        bytes.extend_from_slice(name);
        bytes.resize(bytes.len() + padded - name.len(), 0);
        bytes
    }

    #[test]
    fn inotify_events_are_split() {
        let mut buffer = inotify_event(1, libc::IN_MODIFY, b"");
        buffer.extend(inotify_event(2, libc::IN_DELETE, b"child"));
        buffer.extend_from_slice(&[1, 2, 3]); // truncated trailing bytes are ignored
        let events: Vec<_> = InotifyEvents(&buffer)
            .map(|e| (e.wd, e.mask, e.name.to_vec()))
            .collect();
        assert_eq!(
            events,
            vec![
                (1, libc::IN_MODIFY, vec![]),
                (2, libc::IN_DELETE, b"child".to_vec())
            ]
        );
    }

    /// The v2 watch loop, on an ordinary directory standing in for a cgroup v2 one (the host
    /// may have no cgroup2 memory controller): counts `oom_kill` increases and ends when the
    /// directory is removed.
    #[test]
    fn v2_watch_counts_oom_kills_and_ends_on_removal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cg");
        std::fs::create_dir(&dir).expect("mkdir");
        let events = dir.join("memory.events");
        let write = |kills: u64| {
            std::fs::write(
                &events,
                format!("low 0\nhigh 0\nmax 9\noom 9\noom_kill {kills}\noom_group_kill 0\n"),
            )
            .expect("write memory.events");
        };
        write(2); // kills before the watch started are not reported
        let (sender, receiver) = mpsc::channel();
        let watch = watch_v2(&dir, move || {
            let _ = sender.send(());
        })
        .expect("watch");

        write(3);
        receiver
            .recv_timeout(Duration::from_secs(5))
            .expect("first OOM reported");
        write(5);
        for _ in 0..2 {
            receiver
                .recv_timeout(Duration::from_secs(5))
                .expect("two more OOMs reported");
        }
        write(5); // modified, but no new kill
        assert!(
            receiver.recv_timeout(Duration::from_millis(300)).is_err(),
            "no OOM without an oom_kill increase"
        );
        assert!(!watch.is_finished());

        std::fs::remove_file(&events).expect("rm");
        std::fs::remove_dir(&dir).expect("rmdir");
        wait_until("the watch ends", || watch.is_finished());
    }

    /// On cgroupfs nothing fires on the file itself when the cgroup goes; the parent's
    /// IN_DELETE must end the watch.
    #[test]
    fn v2_watch_ends_on_parent_delete_event() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cg");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("memory.events"), "oom_kill 0\n").expect("write");
        let watch = watch_v2(&dir, || {}).expect("watch");
        // A sibling's removal must not end it.
        std::fs::create_dir(tmp.path().join("sibling")).expect("mkdir");
        std::fs::remove_dir(tmp.path().join("sibling")).expect("rmdir");
        std::thread::sleep(Duration::from_millis(200));
        assert!(!watch.is_finished());
        // Move the file away (its watch stays, no IN_DELETE_SELF), then remove the directory.
        std::fs::rename(dir.join("memory.events"), tmp.path().join("kept")).expect("mv");
        std::fs::remove_dir(&dir).expect("rmdir");
        wait_until("the watch ends", || watch.is_finished());
    }

    #[test]
    fn v2_watch_stops_when_asked() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("memory.events"), "oom_kill 0\n").expect("write");
        let watch = watch_v2(tmp.path(), || {}).expect("watch");
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            watch.stop();
            let _ = done.send(());
        });
        finished
            .recv_timeout(Duration::from_secs(5))
            .expect("stop() returns");
    }

    #[test]
    fn v2_watch_needs_memory_events() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(matches!(
            watch_v2(tmp.path(), || {}),
            Err(CgroupError::NoMemoryController)
        ));
        assert!(matches!(
            watch_v2(&tmp.path().join("gone"), || {}),
            Err(CgroupError::Removed { .. })
        ));
    }
}
