//! What a deleted container must not leave behind: processes, mounts, cgroups, runtime state.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Where to look for one container's traces.
pub struct Trace<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    /// The binary name of a shared manager, whose process serves many containers and
    /// outlives each of them (it names the first container it served in its command line).
    pub manager: Option<String>,
    /// The cgroup the container's own cgroup is created in. `None`: where `ctr` puts it,
    /// `/<namespace>/<id>`; under CRI it is the sandbox's `cgroup_parent`.
    pub cgroup_parent: Option<&'a str>,
    /// containerd's root and state dirs: nothing in them (four levels deep: bundles,
    /// CRI's sandbox and container dirs) may still be named after the container.
    pub containerd_dirs: Vec<PathBuf>,
    /// Other paths that must be gone (a pod's network namespace).
    pub paths: Vec<PathBuf>,
}

impl<'a> Trace<'a> {
    pub fn new(id: &'a str, namespace: &'a str) -> Self {
        Self {
            id,
            namespace,
            manager: None,
            cgroup_parent: None,
            containerd_dirs: Vec::new(),
            paths: Vec::new(),
        }
    }
}

/// Waits (up to 10 s, for shims to exit) until nothing of the container is left; fails
/// with the list of what is.
pub fn assert_clean(trace: &Trace<'_>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(trace);
        if left.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "container {} left behind:\n  {}",
                trace.id,
                left.join("\n  ")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Everything on the host that still names the container.
pub fn leftovers(trace: &Trace<'_>) -> Vec<String> {
    let mut found = processes(trace.id, trace.manager.as_deref());
    found.extend(mounts(trace.id));
    found.extend(cgroups(trace));
    for dir in &trace.containerd_dirs {
        found.extend(
            named_entries(dir, trace.id, 4)
                .into_iter()
                .map(|path| format!("containerd file {}", path.display())),
        );
    }
    for path in &trace.paths {
        if path.exists() {
            found.push(format!("path {}", path.display()));
        }
    }
    found
}

fn names(text: &str, id: &str) -> bool {
    text.split(['/', '\0', ' ', '\n', ':'])
        .any(|word| word == id)
}

/// Processes whose command line or cgroup names the container (its shim is started with
/// `-id <id>`, its init process lives in a cgroup named after it).
fn processes(id: &str, manager: Option<&str>) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec!["cannot read /proc".to_string()];
    };
    let me = std::process::id().to_string();
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
                return None;
            }
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            // A manager (and its zygotes) names the first container it served; that alone
            // is no leak. A process in the container's cgroup is one, whatever its name.
            let program = cmdline.split(' ').next().unwrap_or_default();
            let is_manager = manager.is_some_and(|manager| program.ends_with(manager));
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            ((names(&cmdline, id) && !is_manager) || names(&cgroup, id))
                .then(|| format!("process {pid}: {}", cmdline.trim()))
        })
        .collect()
}

fn mounts(id: &str) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    table
        .lines()
        .filter(|line| line.split(' ').nth(4).is_some_and(|point| names(point, id)))
        .map(|line| format!("mount {line}"))
        .collect()
}

/// The cgroup hierarchies of this host: `/sys/fs/cgroup/<controller>` (v1),
/// `/sys/fs/cgroup/unified` (hybrid), or `/sys/fs/cgroup` itself (v2 only).
fn hierarchies() -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return vec![root.to_path_buf()];
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.is_dir())
        .collect()
}

/// `ctr` puts a container in cgroup `/<namespace>/<id>` of every hierarchy; CRI in
/// `<cgroup_parent>/<id>`.
fn cgroups(trace: &Trace<'_>) -> Vec<String> {
    let mut found = Vec::new();
    for hierarchy in hierarchies() {
        let candidates = match trace.cgroup_parent {
            Some(parent) => vec![
                hierarchy
                    .join(parent.trim_start_matches('/'))
                    .join(trace.id),
            ],
            None => vec![
                hierarchy.join(trace.namespace).join(trace.id),
                hierarchy.join(trace.id),
            ],
        };
        for candidate in candidates {
            if candidate.is_dir() {
                found.push(format!("cgroup {}", candidate.display()));
            }
        }
    }
    found
}

/// Entries under `dir`, at most `depth` levels down, whose name is `id`.
fn named_entries(dir: &Path, id: &str, depth: usize) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_name() == id {
            found.push(path);
        } else if depth > 1 && entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(named_entries(&path, id, depth - 1));
        }
    }
    found
}

/// How many cgroups there are below `relative` (e.g. `/<namespace>`, where `ctr` puts its
/// containers), counted in every hierarchy.
pub fn cgroups_below(relative: &str) -> usize {
    hierarchies()
        .iter()
        .map(|hierarchy| hierarchy.join(relative.trim_start_matches('/')))
        .filter_map(|path| std::fs::read_dir(path).ok())
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
                .count()
        })
        .sum()
}

/// Removes cgroup `relative` (e.g. a pod's `/e2e/kubepods/besteffort/pod<uid>`) and every
/// cgroup below it from each hierarchy, as kubelet does once a pod is gone. `rmdir` fails
/// while a cgroup still holds a process or a child: what could not be removed is returned.
pub fn remove_cgroup(relative: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for hierarchy in hierarchies() {
        let path = hierarchy.join(relative.trim_start_matches('/'));
        if path.is_dir() {
            remove_cgroup_dir(&path, &mut failures);
        }
    }
    failures
}

fn remove_cgroup_dir(path: &Path, failures: &mut Vec<String>) {
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dir(&entry.path(), failures);
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(path) {
        failures.push(format!("cgroup {}: {e}", path.display()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_matched_as_a_whole_word() {
        assert!(names("/ns/abc-1/rootfs", "abc-1"));
        assert!(names("shim -id abc-1 start", "abc-1"));
        assert!(!names("/ns/abc-10/rootfs", "abc-1"));
    }

    #[test]
    fn entries_named_after_an_id_are_found_three_levels_down() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let deep = dir.path().join("a/b/abc-1");
        std::fs::create_dir_all(&deep)?;
        std::fs::create_dir_all(dir.path().join("a/b/c/abc-1"))?;
        std::fs::write(dir.path().join("a/abc-10"), "")?;
        assert_eq!(named_entries(dir.path(), "abc-1", 3), vec![deep]);
        Ok(())
    }
}
