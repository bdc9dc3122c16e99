//! Tests against the real kernel: each test creates cgroups of its own (under every needed v1
//! controller's mount, or under the cgroup2 root, whichever the host has), moves a child
//! process into them and removes them at the end. They need root; without it they are skipped.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use containerd_shim::protos::cgroups::metrics::Metrics;
use containerd_shim::protos::protobuf::Message;

use super::parse::{CgroupMount, parse_mountinfo};
use super::{CgroupError, ContainerCgroup, V1Dirs};

const MIB: u64 = 1024 * 1024;

/// Cgroups created for one test, removed on drop.
struct TestCgroup {
    expected: ContainerCgroup,
    /// Created directories, each once (co-mounted controllers share one).
    created: Vec<PathBuf>,
}

impl TestCgroup {
    /// `None` (test skipped) unless running as root.
    fn create(tag: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating cgroups needs root");
            return None;
        }
        let name = format!("wasmrunner-test-{}-{tag}", std::process::id());
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        let mounts = parse_mountinfo(&mountinfo);
        let v1_mount = |controller: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.root == Path::new("/") && has(m, controller))
        };
        let mut cgroup = TestCgroup {
            expected: ContainerCgroup::from_v2_dir(""),
            created: Vec::new(),
        };
        if v1_mount("memory").is_some() {
            let mut dir_for = |controller: &str| {
                let dir = v1_mount(controller)?.mount_point.join(&name);
                if !cgroup.created.contains(&dir) {
                    std::fs::create_dir(&dir).expect("mkdir v1 cgroup");
                    cgroup.created.push(dir.clone());
                }
                Some(dir)
            };
            let dirs = V1Dirs {
                cpu: dir_for("cpu"),
                cpuacct: dir_for("cpuacct"),
                memory: dir_for("memory"),
                pids: dir_for("pids"),
            };
            cgroup.expected = ContainerCgroup::from_v1_dirs(dirs);
        } else {
            let root = mounts
                .iter()
                .find(|m| m.v2 && m.root == Path::new("/"))
                .expect("neither a v1 memory hierarchy nor a cgroup2 mount");
            let subtree = root.mount_point.join("cgroup.subtree_control");
            for controller in ["+cpu", "+memory", "+pids"] {
                std::fs::write(&subtree, controller).expect("enable controller");
            }
            let dir = root.mount_point.join(&name);
            std::fs::create_dir(&dir).expect("mkdir v2 cgroup");
            cgroup.created.push(dir.clone());
            cgroup.expected = ContainerCgroup::from_v2_dir(dir);
        }
        Some(cgroup)
    }

    fn add(&self, pid: u32) {
        for dir in &self.created {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string()).expect("move into cgroup");
        }
    }

    /// Starts `sh -c <script>` inside the cgroup: the shell waits until it has been moved.
    fn spawn(&self, script: &str) -> KillOnDrop {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _ && exec {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        let mut stdin = child.stdin.take().expect("stdin");
        let child = KillOnDrop(child);
        self.add(pid);
        stdin.write_all(b"go\n").expect("release the child");
        child
    }

    /// Sets the memory limit without swap.
    fn limit_memory(&self, bytes: u64) {
        let write = |file: &str, value: &str| {
            std::fs::write(self.memory_dir().join(file), value).expect(file);
        };
        let value = bytes.to_string();
        if self.expected.is_v2() {
            write("memory.max", &value);
            if self.memory_dir().join("memory.swap.max").exists() {
                write("memory.swap.max", "0");
            }
        } else {
            write("memory.limit_in_bytes", &value);
            if self
                .memory_dir()
                .join("memory.memsw.limit_in_bytes")
                .exists()
            {
                write("memory.memsw.limit_in_bytes", &value);
            }
        }
    }

    fn memory_dir(&self) -> &Path {
        match (self.expected.v2_dir(), self.expected.v1_dirs()) {
            (Some(dir), _) => dir,
            (None, Some(dirs)) => dirs.memory.as_deref().expect("memory dir"),
            (None, None) => unreachable!("a layout is either v1 or v2"),
        }
    }

    /// Removes the directories (the processes in them must have ended).
    fn remove(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while let Some(dir) = self.created.last() {
            match std::fs::remove_dir(dir) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) if Instant::now() < deadline => {
                    eprintln!("rmdir {}: {error}; retrying", dir.display());
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Err(error) => panic!("rmdir {}: {error}", dir.display()),
            }
            self.created.pop();
        }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let mut tries = 0;
            while let Err(error) = std::fs::remove_dir(dir) {
                tries += 1;
                if error.kind() == std::io::ErrorKind::NotFound || tries > 40 {
                    eprintln!("cleanup: rmdir {}: {error}", dir.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn has(mount: &CgroupMount, option: &str) -> bool {
    mount.options.iter().any(|o| o == option)
}

/// A child process, killed and reaped on drop.
struct KillOnDrop(Child);

impl KillOnDrop {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.0.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn metrics_of_a_busy_process() {
    let Some(mut cgroup) = TestCgroup::create("metrics") else {
        return;
    };
    let mut child = cgroup.spawn("sh -c 'while :; do :; done'");
    let found = ContainerCgroup::of_process(child.pid()).expect("of_process");
    assert_eq!(found, cgroup.expected, "resolved directories");

    std::thread::sleep(Duration::from_millis(300));
    // Both cores may be busy with builds: allow the child time to get 50 ms of CPU.
    wait_until(
        "the child has used 50 ms of CPU",
        Duration::from_secs(10),
        || found.metrics().expect("metrics").cpu.usage.total >= 50_000_000,
    );
    let metrics = found.metrics().expect("metrics");
    let usage = &metrics.cpu.usage;
    assert!(usage.total > 0, "cpu {usage:?}");
    assert!(usage.user + usage.kernel > 0, "cpu {usage:?}");
    if !found.is_v2() {
        assert!(!usage.per_cpu.is_empty(), "per-cpu usage on v1");
        assert!(usage.per_cpu.iter().sum::<u64>() > 0, "per-cpu {usage:?}");
    }
    assert!(
        metrics.memory.usage.usage > 0,
        "memory {:?}",
        metrics.memory
    );
    assert!(
        metrics.memory.usage.limit > 0,
        "memory {:?}",
        metrics.memory
    );
    assert!(metrics.pids.current >= 1, "pids {:?}", metrics.pids);
    assert_eq!(metrics.memory_oom_control.oom_kill, 0);
    assert!(!found.memory_oom_killed().expect("oom state"));

    let any = found.metrics_any().expect("metrics_any");
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    let decoded = Metrics::parse_from_bytes(&any.value).expect("decodes");
    assert!(decoded.cpu.usage.total >= usage.total);
    assert!(decoded.pids.current >= 1);

    child.kill();
    cgroup.remove();
    assert!(matches!(found.metrics(), Err(CgroupError::Removed { .. })));
}

#[test]
fn oom_kill_is_reported_and_recorded() {
    let Some(mut cgroup) = TestCgroup::create("oom") else {
        return;
    };
    cgroup.limit_memory(16 * MIB);
    let found = cgroup.expected.clone();
    assert!(!found.memory_oom_killed().expect("oom state"));
    let (sender, ooms) = mpsc::channel();
    let watch = found
        .watch_oom(move || {
            let _ = sender.send(Instant::now());
        })
        .expect("watch_oom");

    let mut child = cgroup.spawn("python3 -c 'a = []\nwhile True: a.append(b\"x\" * (1 << 20))'");
    ooms.recv_timeout(Duration::from_secs(15))
        .expect("the OOM callback fires");
    let status = child
        .wait_timeout(Duration::from_secs(15))
        .expect("the child ends");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "child {status:?}");
    assert!(found.memory_oom_killed().expect("oom state"));
    assert!(
        found
            .metrics()
            .expect("metrics")
            .memory_oom_control
            .oom_kill
            >= 1
    );
    assert!(
        !watch.is_finished(),
        "the watch lasts while the cgroup does"
    );

    cgroup.remove();
    wait_until("the watch ends after rmdir", Duration::from_secs(5), || {
        watch.is_finished()
    });
}

#[test]
fn oom_watch_stops_when_asked() {
    let Some(cgroup) = TestCgroup::create("stop") else {
        return;
    };
    let watch = cgroup.expected.watch_oom(|| {}).expect("watch_oom");
    assert!(!watch.is_finished());
    let (done, finished) = mpsc::channel();
    std::thread::spawn(move || {
        watch.stop();
        let _ = done.send(());
    });
    finished
        .recv_timeout(Duration::from_secs(5))
        .expect("stop() returns");
    // A dropped watch releases the cgroup: it can still be removed.
    let dropped = cgroup.expected.watch_oom(|| {}).expect("watch_oom");
    drop(dropped);
    drop(cgroup);
}

#[test]
fn our_own_cgroup_resolves_and_reads() {
    // Needs no root: the test process's own cgroup.
    let cgroup = ContainerCgroup::of_process(std::process::id()).expect("of_process");
    let metrics = cgroup.metrics().expect("metrics");
    assert!(metrics.cpu.is_some());
    if let Some(dirs) = cgroup.v1_dirs()
        && dirs.cpuacct.is_some()
    {
        assert!(metrics.cpu.usage.total > 0, "cpuacct.usage of our cgroup");
    }
}

#[test]
fn missing_process_is_an_error() {
    // PIDs are below /proc/sys/kernel/pid_max, at most 2^22.
    let error = ContainerCgroup::of_process(u32::MAX).expect_err("no such process");
    assert!(matches!(error, CgroupError::Read { .. }), "{error}");
}

/// The `Metrics` type name written out is protobuf's own.
#[test]
fn metrics_type_name_is_the_descriptors_name() {
    use containerd_shim::protos::protobuf::MessageFull;
    assert_eq!(super::METRICS_TYPE, Metrics::descriptor().full_name());
}
