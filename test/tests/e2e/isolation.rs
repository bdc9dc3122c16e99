//! An untrusted guest reaches nothing of the node, the shim or another pod. From the
//! guest's side, the probe's `escape` command tries each way out and must be denied every
//! one; from the host's side, the guest's process must hold no privilege, a seccomp filter,
//! no descriptor of anyone else's, and only the container's own environment and command
//! line. Native containers keep the spec containerd wrote.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_e2e::suite::{Attached, Needs};
use wasmrunner_e2e::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("a_module_guest_reaches_nothing", |env| {
            guest_reaches_nothing(env, TestImage::Probe(Target::WasiP1), false)
        }),
        Case::new("an_artifact_guest_reaches_nothing", |env| {
            guest_reaches_nothing(env, TestImage::ProbeArtifact, false)
        })
        .needs(&[Needs::WasmLayers]),
        Case::new("a_pod_guest_reaches_nothing", a_pod_guest_reaches_nothing),
        Case::new(
            "native_containers_keep_their_spec",
            native_containers_keep_their_spec,
        ),
    ]
}

const WAIT: Duration = Duration::from_secs(20);

/// The shims' own directory in containerd's state dir (`wasmrunner_shim::service::state_root`).
const SHIM_STATE: &str = "io.containerd.wasmrunner.v1";

/// What the probe's `escape` tries before the host paths it is given: 6 in `/proc`, 10
/// descriptors through `/proc/self/fd`, 2 in `/sys`, 3 in `/dev`, 2 `..` paths, 2 symlinks.
const FIXED_ESCAPES: usize = 6 + 10 + 2 + 3 + 2 + 2;

/// A neighbour container runs; the guest is given host paths (a file of the neighbour's
/// rootfs, the node cache's code, containerd's config, and the directory of its milestones
/// FIFO and, when `traced` (containerd's environment names a collector), its request FIFO) and
/// tries every escape.
pub fn guest_reaches_nothing(env: &Env, image: TestImage, traced: bool) -> Result<()> {
    let neighbour =
        env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "sleep"])?;
    let outcome = try_escapes(env, image, &neighbour, traced);
    neighbour.kill_and_remove(env, WAIT)?;
    outcome
}

fn try_escapes(env: &Env, image: TestImage, neighbour: &Attached, traced: bool) -> Result<()> {
    let neighbour_file = env
        .bundle_of(&neighbour.id)
        .join("rootfs/data/greeting.txt");
    ensure!(
        neighbour_file.is_file(),
        "the neighbour's file {} is not on the host: nothing would be tested",
        neighbour_file.display()
    );
    let mut host_paths = vec![neighbour_file, env.containerd.root().join("config.toml")];
    host_paths.extend(env.containerd.module_cache_entries().into_iter().next());
    host_paths.push(milestones_dir(env));
    let host_paths: Vec<String> = host_paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let mut args = vec!["/probe.wasm", "escape"];
    args.extend(host_paths.iter().map(String::as_str));
    args.push("sleep");
    let guest = env.start_attached_with(image, &["--env", "GUEST_MARKER=visible"], &args)?;
    let report = guest.stdout();
    let checked = check_guest_output(&report, FIXED_ESCAPES + 2 * host_paths.len())
        .and_then(|()| check_guest_process(env, &guest.id, traced));
    if checked.is_ok() {
        // What each try got, in the suite's output: the record of what a guest meets.
        println!(
            "{} escapes from {}:\n{report}",
            env.engine.label(),
            image.name()
        );
    }
    guest.kill_and_remove(env, WAIT)?;
    checked
}

/// Every try says `denied`, and all of them were made.
fn check_guest_output(stdout: &str, expected: usize) -> Result<()> {
    let reached: Vec<&str> = stdout.lines().filter(|l| l.contains(": REACHED")).collect();
    ensure!(
        reached.is_empty(),
        "the guest reached {reached:#?}\n{stdout}"
    );
    // A `..` above `/` that read the very file the grant gives under the path without it
    // (Wasmer resolves `/..` as `/`, as POSIX does): nothing reached. Only those two tries.
    let inside: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains(": inside the grant ("))
        .collect();
    ensure!(
        inside
            .iter()
            .all(|l| l.starts_with("read /../") || l.starts_with("read ../")),
        "only a `..` above / may stay inside the grant: {inside:#?}\n{stdout}"
    );
    let denied = stdout.lines().filter(|l| l.contains(": denied (")).count() + inside.len();
    ensure!(
        denied == expected && stdout.contains(&format!("escapes tried: {expected}\n")),
        "expected {expected} escapes tried and denied, saw {denied}:\n{stdout}"
    );
    Ok(())
}

/// From the host: no privilege, a seccomp filter, no descriptor shared with any other
/// process, and the container's own environment and command line only.
fn check_guest_process(env: &Env, id: &str, traced: bool) -> Result<()> {
    let pid = env.task_pid(id)?;
    check_privileges(pid)?;
    check_descriptors(env, pid)?.expect(pid, traced)?;
    check_process_strings(env, id, pid)
}

/// The shim's FIFOs a guest's process holds the write end of.
struct ShimFifos {
    /// Through which its engine tells the shim when it got going, or why it could not.
    milestones: usize,
    /// Through which a traced task's server tells the shim about the requests it answered.
    requests: usize,
}

impl ShimFifos {
    /// One milestones FIFO, and one request FIFO when the task is traced.
    fn expect(&self, pid: u32, traced: bool) -> Result<()> {
        let requests = usize::from(traced);
        ensure!(
            self.milestones == 1 && self.requests == requests,
            "the guest's process {pid} holds {} milestones FIFO(s) and {} request FIFO(s), \
             expected 1 and {requests}",
            self.milestones,
            self.requests
        );
        Ok(())
    }
}

/// Where the engine's shim keeps this run's tasks' state, their milestones FIFOs among it
/// (`wasmrunner_shim::service::state_root`).
fn milestones_dir(env: &Env) -> std::path::PathBuf {
    env.containerd
        .state_dir()
        .join(SHIM_STATE)
        .join(&env.engine.name)
        .join(&env.containerd.namespace)
}

/// `NoNewPrivs: 1`, `Seccomp: 2` and no capability in any set.
fn check_privileges(pid: u32) -> Result<()> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading the status of {pid}"))?;
    for (field, wanted) in [
        ("NoNewPrivs", "1"),
        ("Seccomp", "2"),
        ("CapEff", "0000000000000000"),
        ("CapPrm", "0000000000000000"),
        ("CapBnd", "0000000000000000"),
        ("CapAmb", "0000000000000000"),
    ] {
        ensure!(
            status_field(&status, field) == Some(wanted),
            "{field} of the guest's process {pid} is {:?}, not {wanted}:\n{status}",
            status_field(&status, field)
        );
    }
    Ok(())
}

/// The environment and command line a host sees for the guest of task `id` are the
/// container's own.
fn check_process_strings(env: &Env, id: &str, pid: u32) -> Result<()> {
    let (spec_args, spec_env) = spec_process(env, id)?;
    let spec_env: HashSet<&str> = spec_env.iter().map(String::as_str).collect();
    let environ = proc_strings(pid, "environ")?;
    ensure!(
        environ.iter().any(|var| var == "GUEST_MARKER=visible"),
        "the container's own env is not in /proc/{pid}/environ: {environ:?}"
    );
    let foreign: Vec<&String> = environ
        .iter()
        .filter(|var| !spec_env.contains(var.as_str()))
        .collect();
    ensure!(
        foreign.is_empty(),
        "/proc/{pid}/environ holds what is not the container's env: {foreign:?}"
    );
    let cmdline = proc_strings(pid, "cmdline")?;
    ensure!(
        !cmdline.is_empty() && spec_args.starts_with(&cmdline),
        "/proc/{pid}/cmdline is {cmdline:?}, not (a prefix of) the container's args {spec_args:?}"
    );
    Ok(())
}

/// Above stderr the guest may hold: the node cache's code, read-only; its preopened root
/// (`/`, which is its rootfs); memfds and anonymous inodes (the engine's own epoll, eventfd,
/// memory images); sockets and pipes that no other process on the host holds (the engine's
/// own); its milestones FIFO and a traced task's request FIFO, write-only. Nothing else: no
/// shim socket, log, bundle file or zygote channel. Returns how many of those FIFOs it holds.
fn check_descriptors(env: &Env, pid: u32) -> Result<ShimFifos> {
    // The shims' state, whatever the containerd namespace (CRI's pods have their own).
    let state = env.containerd.state_dir().join(SHIM_STATE);
    let mut fifos = ShimFifos {
        milestones: 0,
        requests: 0,
    };
    let cache = env.containerd.module_cache_dir();
    let elsewhere = held_by_others(pid);
    let fd_dir = format!("/proc/{pid}/fd");
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(&fd_dir).with_context(|| format!("listing {fd_dir}"))? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if fd <= 2 {
            continue;
        }
        let target = std::fs::read_link(entry.path())
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        let flags = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("flags:"))
                    .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
            })
            .unwrap_or(u32::MAX);
        let read_only = flags & libc::O_ACCMODE as u32 == libc::O_RDONLY as u32;
        let write_only = flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32;
        let shims = Path::new(&target).starts_with(&state) && write_only;
        if shims && target.ends_with(".milestones") {
            fifos.milestones += 1;
            continue;
        }
        if shims && target.ends_with(".requests") {
            fifos.requests += 1;
            continue;
        }
        let fine = if target.starts_with("socket:") || target.starts_with("pipe:") {
            !elsewhere.contains(&target)
        } else if target.starts_with("anon_inode:") || target.starts_with("/memfd:") {
            true
        } else if target == "/" {
            read_only
        } else {
            Path::new(&target).starts_with(&cache) && read_only
        };
        if !fine {
            problems.push(format!("fd {fd} -> {target} (flags {flags:o})"));
        }
    }
    if !problems.is_empty() {
        bail!("the guest's process {pid} holds descriptors it must not: {problems:#?}");
    }
    Ok(fifos)
}

/// The sockets and pipes (`socket:[inode]`) every other process on the host has open.
fn held_by_others(pid: u32) -> HashSet<String> {
    let mut held = HashSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return held;
    };
    for process in processes.flatten() {
        let name = process.file_name().to_string_lossy().into_owned();
        if name == pid.to_string() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.display().to_string();
                if target.starts_with("socket:") || target.starts_with("pipe:") {
                    held.insert(target);
                }
            }
        }
    }
    held
}

/// The Kubernetes path: a pod (kubelet's calls, with the `RuntimeDefault` seccomp profile
/// the harness's pods ask for) whose Wasm container tries every escape. Ours stacks on the
/// pod's profile: the guest still has no capability and `no_new_privs`, and holds nothing
/// of anyone else's.
fn a_pod_guest_reaches_nothing(env: &Env) -> Result<()> {
    let handler = env.engine.handler();
    let mut pod = Pod::run(env, PodSpec::new("isolated", &handler, Network::Host))?;
    let checked = (|| {
        let guest = pod.run_container(&ContainerSpec::new(
            "guest",
            TestImage::Probe(Target::WasiP1),
            &["escape", "sleep"],
        ))?;
        let lines = pod.wait_for_stdout("guest", 0, "ready", WAIT)?;
        check_guest_output(&format!("{}\n", lines.join("\n")), FIXED_ESCAPES)?;
        let pid = pod.container_pid(&guest)?;
        check_privileges(pid)?;
        check_descriptors(env, pid)?.expect(pid, false)?;
        Ok(())
    })();
    pod.remove()?.assert_clean()?;
    checked
}

/// Native programs (a pod's pause, a sidecar) run with the spec as containerd wrote it:
/// `ctr run`'s default capabilities and no seccomp filter of wasmrunner's.
fn native_containers_keep_their_spec(env: &Env) -> Result<()> {
    let task = env.start_attached(TestImage::Probe(Target::Native), &["/probe", "sleep"])?;
    let checked = (|| {
        let pid = env.task_pid(&task.id)?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        ensure!(
            status_field(&status, "Seccomp") == Some("0"),
            "a native container got a seccomp filter ctr did not ask for:\n{status}"
        );
        ensure!(
            status_field(&status, "CapEff").is_some_and(|caps| caps != "0000000000000000"),
            "a native container lost ctr's default capabilities:\n{status}"
        );
        let (args, _) = spec_process(env, &task.id)?;
        ensure!(
            args == proc_strings(pid, "cmdline")?,
            "a native program's command line is its own after execve"
        );
        Ok(())
    })();
    task.kill_and_remove(env, WAIT)?;
    checked
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim())
    })
}

/// `/proc/PID/environ` or `cmdline`, split at NULs, empty entries left out.
fn proc_strings(pid: u32, file: &str) -> Result<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/{file}"))
        .with_context(|| format!("reading /proc/{pid}/{file}"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|entry| !entry.is_empty())
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect())
}

/// The args and env of the bundle's `config.json`, as containerd wrote it.
fn spec_process(env: &Env, id: &str) -> Result<(Vec<String>, Vec<String>)> {
    let path = env.bundle_of(id).join("config.json");
    let spec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let strings = |key: &str| -> Vec<String> {
        spec["process"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|value| value.as_str().map(str::to_string))
            .collect()
    };
    Ok((strings("args"), strings("env")))
}
