//! A container's cgroup: resource usage for `ctr task metrics` / `kubectl top`, and
//! out-of-memory events for containerd's `TaskOOM` (the `OOMKilled` reason in Kubernetes).
//!
//! The cgroup of a process is found from `/proc/<pid>/cgroup` and `/proc/self/mountinfo`, on
//! cgroup v1 hosts (one directory per controller; `cpu` and `cpuacct` may be separate or
//! co-mounted), hybrid hosts (v1 controllers plus an empty cgroup2 at `/sys/fs/cgroup/unified`:
//! treated as v1) and pure cgroup v2 hosts (one directory). The interface files are read
//! directly.
//!
//! Usage is always reported as containerd's cgroup v1 `Metrics` message
//! (`io.containerd.cgroups.v1.Metrics`), which CRI and `ctr` decode on any host; on v2 the v2
//! files are mapped onto it (see [`ContainerCgroup::metrics`]).

mod metrics;
mod oom;
mod parse;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use containerd_shim::protos::cgroups::metrics::Metrics;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{self, Message};

/// The type name of containerd's cgroup v1 `Metrics` message.
const METRICS_TYPE: &str = "io.containerd.cgroups.v1.Metrics";

pub use oom::OomWatch;

/// Why a cgroup could not be found, read or watched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CgroupError {
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {reason}: {line:?}", .path.display())]
    Malformed {
        path: PathBuf,
        line: String,
        reason: &'static str,
    },
    #[error(
        "process {pid} is in no cgroup visible here \
         (no cpu/cpuacct/memory/pids v1 hierarchy and no cgroup2 mount that contains it)"
    )]
    NotVisible { pid: u32 },
    #[error("the cgroup has no memory controller")]
    NoMemoryController,
    #[error("the cgroup {} no longer exists", .path.display())]
    Removed { path: PathBuf },
    #[error("{call} failed: {source}")]
    Os {
        call: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot encode the metrics: {0}")]
    Encode(#[from] protobuf::Error),
}

/// The cgroup v1 directories of a process, one per controller this module reads. A controller
/// that is not mounted (or whose hierarchy does not contain the process's cgroup) is `None`.
/// With `cpu,cpuacct` co-mounted, `cpu` and `cpuacct` are the same directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct V1Dirs {
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    V1(V1Dirs),
    V2(PathBuf),
}

/// The cgroup of a container: resolved directories per controller (v1) or the one directory
/// (v2). Cheap to clone; holds no open files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCgroup {
    layout: Layout,
}

impl ContainerCgroup {
    /// The cgroup of process `pid`.
    pub fn of_process(pid: u32) -> Result<Self, CgroupError> {
        let cgroup_file = PathBuf::from(format!("/proc/{pid}/cgroup"));
        let cgroup_text = read(&cgroup_file)?;
        let mountinfo_file = Path::new("/proc/self/mountinfo");
        let mountinfo = read(mountinfo_file)?;
        let lines = parse::parse_proc_cgroup(&cgroup_text, &cgroup_file)?;
        let mounts = parse::parse_mountinfo(&mountinfo);
        parse::resolve(&lines, &mounts)
            .map(|layout| ContainerCgroup { layout })
            .ok_or(CgroupError::NotVisible { pid })
    }

    /// A cgroup v2 cgroup, by its directory (e.g. `/sys/fs/cgroup/kubepods/.../<id>`).
    pub fn from_v2_dir(dir: impl Into<PathBuf>) -> Self {
        ContainerCgroup {
            layout: Layout::V2(dir.into()),
        }
    }

    /// A cgroup v1 cgroup, by its controllers' directories.
    pub fn from_v1_dirs(dirs: V1Dirs) -> Self {
        ContainerCgroup {
            layout: Layout::V1(dirs),
        }
    }

    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn is_v2(&self) -> bool {
        matches!(self.layout, Layout::V2(_))
    }

    /// The v1 controller directories, or `None` on cgroup v2.
    pub fn v1_dirs(&self) -> Option<&V1Dirs> {
        match &self.layout {
            Layout::V1(dirs) => Some(dirs),
            Layout::V2(_) => None,
        }
    }

    /// The v2 directory, or `None` on cgroup v1.
    pub fn v2_dir(&self) -> Option<&Path> {
        match &self.layout {
            Layout::V1(_) => None,
            Layout::V2(dir) => Some(dir),
        }
    }

    /// Current usage as containerd's cgroup v1 `Metrics` message.
    ///
    /// * CPU, in nanoseconds: v1 `cpuacct.usage` (total), `cpuacct.stat` (user/kernel, clock
    ///   ticks converted), `cpuacct.usage_percpu`, throttling from `cpu.stat`; v2 `cpu.stat`
    ///   `usage_usec`/`user_usec`/`system_usec`/`throttled_usec` × 1000, no per-CPU figures.
    /// * Memory: v1 `memory.{usage_in_bytes,limit_in_bytes,max_usage_in_bytes,failcnt}`, the
    ///   `memsw`, `kmem` and `kmem.tcp` variants when present, all of `memory.stat` and
    ///   `memory.oom_control`. v2: `memory.current`, `memory.max` (`max` → `u64::MAX`),
    ///   `memory.peak`, `memory.events` (`max` → failcnt, `oom_kill`), `memory.stat` mapped to
    ///   the v1 names (`anon` → rss, `file` → cache, `inactive_file`, …; v2 figures are
    ///   hierarchical, so the `total_*` fields repeat them). As with v1's `memsw` files, the
    ///   swap entry counts memory plus swap (`memory.current + memory.swap.current`).
    /// * Pids: `pids.current`, `pids.max` (`max` → 0, as runc reports it).
    ///
    /// A file the kernel does not provide leaves its fields at 0; a controller that is absent
    /// leaves its section unset. CRI's working set is `usage - total_inactive_file`.
    pub fn metrics(&self) -> Result<Metrics, CgroupError> {
        match &self.layout {
            Layout::V1(dirs) => metrics::v1(dirs),
            Layout::V2(dir) => metrics::v2(dir),
        }
    }

    /// [`Self::metrics`] packed as the protobuf `Any` that the shim Task API's `Stats` returns
    /// (type URL `io.containerd.cgroups.v1.Metrics`, as runc's shim sends it).
    pub fn metrics_any(&self) -> Result<Any, CgroupError> {
        let metrics = self.metrics()?;
        let mut any = Any::new();
        // Written out, not asked of `Metrics::descriptor()`, which would build every
        // descriptor of the proto files on the heap (see `service::events`).
        any.type_url = METRICS_TYPE.to_owned();
        any.value = metrics.write_to_bytes()?;
        Ok(any)
    }

    /// Whether the kernel's OOM killer has killed a process in this cgroup. v1: the
    /// `oom_kill` count of `memory.oom_control` (kernels before 4.13 lack it: `under_oom`
    /// instead); v2: the `oom_kill` count of `memory.events`.
    pub fn memory_oom_killed(&self) -> Result<bool, CgroupError> {
        match &self.layout {
            Layout::V1(dirs) => metrics::v1_oom_killed(dirs),
            Layout::V2(dir) => metrics::v2_oom_killed(dir),
        }
    }

    /// Calls `on_oom` each time the kernel's OOM killer acts in this cgroup, from a thread of
    /// its own, until the returned watch is dropped or the cgroup is removed.
    ///
    /// v1: an eventfd registered through `cgroup.event_control` on `memory.oom_control` (the
    /// kernel signals it when the cgroup goes out of memory, and once more when the cgroup is
    /// removed); v2: inotify on `memory.events`, calling `on_oom` once per increase of its
    /// `oom_kill` count, plus inotify on the parent directory to notice the cgroup's removal.
    /// The thread sleeps in `poll(2)` between events.
    pub fn watch_oom(&self, on_oom: impl Fn() + Send + 'static) -> Result<OomWatch, CgroupError> {
        match &self.layout {
            Layout::V1(dirs) => {
                let memory = dirs
                    .memory
                    .as_ref()
                    .ok_or(CgroupError::NoMemoryController)?;
                oom::watch_v1(memory, on_oom)
            }
            Layout::V2(dir) => oom::watch_v2(dir, on_oom),
        }
    }
}

/// Reads a whole file, as the typed error.
fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_owned(),
        source,
    })
}
