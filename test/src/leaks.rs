//! What a deleted container must not leave behind: processes, mounts, cgroups, runtime state.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// Where to look for one container's traces.
pub struct Trace<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
    pub engine: &'a str,
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
    let mut found = processes(trace.id);
    found.extend(mounts(trace.id));
    found.extend(cgroups(trace.namespace, trace.id));
    let state = Path::new("/run/containerd")
        .join(trace.engine)
        .join(trace.namespace)
        .join(trace.id);
    if state.exists() {
        found.push(format!("runtime state {}", state.display()));
    }
    found
}

fn names(text: &str, id: &str) -> bool {
    text.split(['/', '\0', ' ', '\n', ':'])
        .any(|word| word == id)
}

/// Processes whose command line or cgroup names the container (its shim is started with
/// `-id <id>`, its init process lives in a cgroup named after it).
fn processes(id: &str) -> Vec<String> {
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
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).unwrap_or_default();
            (names(&cmdline, id) || names(&cgroup, id))
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

/// `ctr` puts a container in cgroup `/<namespace>/<id>` of every hierarchy.
fn cgroups(namespace: &str, id: &str) -> Vec<String> {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for hierarchy in hierarchies.flatten() {
        for candidate in [
            hierarchy.path().join(namespace).join(id),
            hierarchy.path().join(id),
        ] {
            if candidate.is_dir() {
                found.push(format!("cgroup {}", candidate.display()));
            }
        }
    }
    found
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
}
