//! The zygote every container operation runs in, and a spare that replaces it when it dies.
//!
//! The zygote is forked first thing in `main`, while the shim is still single-threaded: the
//! one moment a fork is safe. Once threads run, a new zygote can only be forked from a live
//! one. So the shim keeps two, the zygote and a spare forked from it (a sibling: both are
//! children of the shim, and die with it). When an operation finds the zygote dead (killed
//! by the OOM killer or an operator's `kill -9`), the spare takes its place and a new spare
//! is forked from it; the operation is tried once more. Only when both are dead at once does
//! every later operation fail, and says so.
//!
//! Both are named in `ps` ([`ZYGOTE_NAME`], [`SPARE_NAME`]), for operators and the tests, and
//! so is every child forked from them for one job ([`BUILDER_NAME`], [`COMPILER_NAME`],
//! [`DELETER_NAME`]): `pgrep -x wr-zygote` finds the zygote alone, not a builder that happens
//! to run beside it (killing that would fail a Create).

use std::sync::{Arc, Mutex, OnceLock};

use zygote::Zygote;

use crate::failure::panic_reason;

/// The `comm` of the zygote operations run in.
pub const ZYGOTE_NAME: &str = "wr-zygote";
/// The `comm` of the spare.
pub const SPARE_NAME: &str = "wr-zygote-spare";
/// The `comm` of a child that builds one container (and of its init process, until the
/// workload runs).
pub const BUILDER_NAME: &str = "wr-build";
/// The `comm` of a child that compiles one module on the host.
pub const COMPILER_NAME: &str = "wr-compile";
/// The `comm` of a child that deletes one container.
pub const DELETER_NAME: &str = "wr-delete";

/// A zygote of the family and its pid. The one forked in `main` is a `'static` of the zygote
/// crate; its replacements are owned.
pub(super) struct Member {
    held: Held,
    pid: u32,
}

enum Held {
    First(&'static Zygote),
    Replacement(Zygote),
}

impl std::ops::Deref for Member {
    type Target = Zygote;

    fn deref(&self) -> &Zygote {
        match &self.held {
            Held::First(zygote) => zygote,
            Held::Replacement(zygote) => zygote,
        }
    }
}

impl Member {
    /// A fresh copy of this zygote (a child of the shim) holding no channel but its own,
    /// named `name` in `ps`.
    pub(super) fn fork(&self, name: &str) -> Result<Zygote, String> {
        // The zygote crate panics when the fork or its channel fails.
        let child = std::panic::catch_unwind(|| self.spawn())
            .map_err(|panic| panic_reason(&*panic).to_string())?;
        child
            .try_run(set_up_child, (self.pid, name.to_string()))
            .map_err(|err| format!("cannot set up the forked zygote: {err}"))?;
        Ok(child)
    }
}

struct Family {
    current: Mutex<Arc<Member>>,
    spare: Mutex<Option<Member>>,
}

static FAMILY: OnceLock<Family> = OnceLock::new();

/// Forks the zygote and its spare. Call it first thing in `main`, while the process has one
/// thread.
pub fn init() {
    Zygote::init();
    let first = Zygote::global();
    let pid = match first.try_run(become_zygote, ZYGOTE_NAME.to_string()) {
        Ok(pid) => pid,
        Err(err) => {
            tracing::warn!("the zygote did not start: {err}");
            return;
        }
    };
    let first = Member {
        held: Held::First(first),
        pid,
    };
    let spare = spawn_named(&first, SPARE_NAME)
        .inspect_err(|err| tracing::warn!("no spare zygote: {err}"))
        .ok();
    let _ = FAMILY.set(Family {
        current: Mutex::new(Arc::new(first)),
        spare: Mutex::new(spare),
    });
}

/// Runs in a zygote: it ends when the shim does (a killed manager leaves no zygote behind),
/// and works from `/`, since the shim's working directory is a bundle that containerd
/// deletes while a manager still serves other containers.
pub(super) fn die_with_parent(_: ()) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let _ = std::env::set_current_dir("/");
}

/// Closes the listening sockets the fork inherited (the serving process's, at descriptor
/// 3): held here too, one would go on taking connections after the serving process exits,
/// so that nothing (`shim delete`, a manager's `start`) could tell it is dead. The zygote's
/// own channel is a connected socket pair, and stays.
fn drop_listening_sockets() {
    for fd in crate::sys::socket_fds() {
        if crate::sys::is_listening(fd) {
            // SAFETY: closes a descriptor this process inherited and never uses.
            unsafe { libc::close(fd) };
        }
    }
}

/// The signals an operator's `pkill` or `kill` of a shim's processes sends, which its
/// serving process outlives (see `service::exits`): a zygote outlives them too, or the
/// serving process would be left with no zygote and every later Create would fail.
const OUTLIVED: [libc::c_int; 2] = [libc::SIGTERM, libc::SIGINT];

/// Sets what [`OUTLIVED`] signals do in this process.
fn outlived_signals(action: libc::sighandler_t) {
    for signal in OUTLIVED {
        // SAFETY: `action` is SIG_IGN or SIG_DFL, no handler: setting either touches only
        // this process's signal dispositions.
        unsafe {
            libc::signal(signal, action);
        }
    }
}

// Runs in a new zygote or spare; returns its pid. A forked child inherits no parent-death
// signal, so each sets its own.
fn become_zygote(name: String) -> u32 {
    die_with_parent(());
    outlived_signals(libc::SIG_IGN);
    drop_listening_sockets();
    crate::sys::set_process_name(&name);
    std::process::id()
}

// Runs in a process just forked from the zygote `spawner`: takes its name, and closes the
// channels it inherited (see `close_inherited_channels`). An ignored signal stays ignored
// across fork and exec: a builder gives [`OUTLIVED`] back their default action, so that the
// container init it makes (and the guest) dies of SIGTERM as any container's does.
fn set_up_child((spawner, name): (u32, String)) {
    outlived_signals(libc::SIG_DFL);
    crate::sys::set_process_name(&name);
    close_inherited_channels(spawner);
}

// A process just forked from the zygote `spawner` inherited the zygote's own channel to the
// shim (and, through older zygotes, theirs): while any copy of a channel's end stays open,
// the shim never sees that zygote die and waits on it forever. Every inherited unix socket
// made by another process than `spawner` is closed; its own channel, which `spawner` made
// for it, stays.
fn close_inherited_channels(spawner: u32) {
    for fd in crate::sys::socket_fds() {
        if crate::sys::socket_creator(fd).is_some_and(|pid| pid != spawner) {
            // SAFETY: closing a descriptor nothing in this single-threaded process uses:
            // another zygote's channel, which this one never reads or writes.
            unsafe {
                libc::close(fd);
            }
        }
    }
}

fn ping(_: ()) {}

fn rename(name: String) {
    crate::sys::set_process_name(&name);
}

/// A sibling of `from` (another child of the shim), named `name`.
fn spawn_named(from: &Member, name: &str) -> Result<Member, String> {
    let zygote = from
        .fork(name)
        .map_err(|err| format!("cannot fork a zygote: {err}"))?;
    let pid = zygote
        .try_run(become_zygote, name.to_string())
        .map_err(|err| format!("cannot set up a new zygote: {err}"))?;
    Ok(Member {
        held: Held::Replacement(zygote),
        pid,
    })
}

/// Runs `work` in the zygote. `work` returns `Err` when it could not reach the zygote; if
/// the zygote is then found dead, the spare replaces it and `work` runs once more.
pub(super) fn with_zygote<T>(work: impl Fn(&Member) -> Result<T, String>) -> Result<T, String> {
    let family = FAMILY
        .get()
        .ok_or("the zygote was not started (zygotes::init)")?;
    let current = family.current()?;
    match work(&current) {
        Err(err) if current.try_run(ping, ()).is_err() => {
            tracing::warn!("the zygote died ({err}); its spare takes over");
            work(&*family.replace(&current)?)
        }
        result => result,
    }
}

impl Family {
    fn current(&self) -> Result<Arc<Member>, String> {
        self.current
            .lock()
            .map(|current| Arc::clone(&current))
            .map_err(|_| "the zygote's lock is poisoned".to_string())
    }

    /// Puts the spare in the place of `dead` (unless another thread already did) and forks
    /// a new spare from it; returns the zygote now in place.
    fn replace(&self, dead: &Arc<Member>) -> Result<Arc<Member>, String> {
        let mut current = self
            .current
            .lock()
            .map_err(|_| "the zygote's lock is poisoned".to_string())?;
        if !Arc::ptr_eq(&current, dead) {
            return Ok(Arc::clone(&current));
        }
        let mut spare = self
            .spare
            .lock()
            .map_err(|_| "the spare zygote's lock is poisoned".to_string())?;
        let next = spare
            .take()
            .filter(|spare| spare.try_run(rename, ZYGOTE_NAME.to_string()).is_ok())
            .ok_or(
                "the zygote and its spare are both dead: no container can be created, \
                 started, signalled or deleted until this shim or manager is restarted",
            )?;
        *spare = spawn_named(&next, SPARE_NAME)
            .inspect_err(|err| tracing::warn!("no new spare zygote: {err}"))
            .ok();
        *current = Arc::new(next);
        tracing::warn!("a new zygote is in place");
        Ok(Arc::clone(&current))
    }
}
