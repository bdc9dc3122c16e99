//! Faults (issue #14): what a container, its neighbours and the node are left with when a
//! process of the stack dies at the wrong moment (the zygote, a per-pod shim or the manager
//! in the middle of a compile, containerd in the middle of a Create), when the node module
//! cache's disk is full or read-only, and when a workload never returns and has to be
//! stopped with a grace period. Each case prints what it measured (`faults: ...` lines).

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};
use wasmrunner_e2e::command::{Capture, Outcome, describe, wait_within};
use wasmrunner_e2e::containerd::{Containerd, parent_of};
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::engine::Mode;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{GREETING, HELLO, SLOW_COMPILE_RAN, TestImage, slow_compile_module};
use wasmrunner_e2e::leaks::{Trace, assert_clean, remove_cgroup};
use wasmrunner_e2e::procs::{self, Process};
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "zygote_killed_while_containers_run_and_start",
            zygote_killed_while_containers_run_and_start,
        ),
        Case::new("server_killed_mid_compile", server_killed_mid_compile)
            .needs(&[Needs::HostCompile]),
        Case::new("containerd_killed_mid_create", containerd_killed_mid_create)
            .needs(&[Needs::HostCompile]),
        Case::new("node_cache_disk_full", node_cache_disk_full),
        Case::new("node_cache_read_only", node_cache_read_only),
        Case::new(
            "sigterm_to_the_shim_leaves_it_serving",
            sigterm_to_the_shim_leaves_it_serving,
        ),
        Case::new("stop_with_a_grace_period", stop_with_a_grace_period),
        Case::new("cri_stop_with_a_timeout", cri_stop_with_a_timeout),
        Case::new(
            "a_shim_no_create_reaches_exits",
            a_shim_no_create_reaches_exits,
        )
        .needs(&[Needs::PerPodMode]),
    ]
}

/// SIGTERM to every process of a shim (an operator's `pkill`, a node's shutdown script)
/// leaves it serving, as containerd's own shims are left: its serving process, zygote and
/// spare all outlive it, the container it runs is not touched, and a container created
/// afterwards in the same pod runs. A zygote and spare that died of it used to leave a
/// serving process whose every Create failed.
fn sigterm_to_the_shim_leaves_it_serving(env: &Env) -> Result<()> {
    let pod = format!(
        "io.kubernetes.cri.sandbox-id={}",
        env.container_id("sigterm-pod")
    );
    let flags = ["--annotation", pod.as_str()];
    let sleeper = env.start_attached_with(PROBE, &flags, &["/probe.wasm", "sleep"])?;
    let pid = env.task_pid(&sleeper.id)?;
    let server = parent_of(pid).context("the sleeper has no parent")?;
    let family: Vec<u32> = [server]
        .into_iter()
        .chain(procs::children_named(server, ZYGOTE))
        .chain(procs::children_named(server, ZYGOTE_SPARE))
        .collect();
    ensure!(
        family.len() == 3,
        "expected a serving process, a zygote and a spare, found {family:?}"
    );
    for member in &family {
        procs::signal(*member, libc::SIGTERM)
            .with_context(|| format!("sending SIGTERM to {member}"))?;
    }
    std::thread::sleep(Duration::from_millis(300));
    let dead: Vec<u32> = family
        .iter()
        .copied()
        .filter(|p| !procs::alive(*p))
        .collect();
    ensure!(dead.is_empty(), "{dead:?} of {family:?} died of SIGTERM");
    ensure!(
        env.task_status(&sleeper.id)?.as_deref() == Some("RUNNING"),
        "the running container did not run on"
    );
    let out = env.run_rm_with(HELLO_IMAGE, &flags, &[])?;
    ensure!(
        out.success() && out.stdout.contains(HELLO),
        "a container created after the SIGTERM did not run: {out}"
    );
    sleeper.kill_and_remove(env, WAIT)
}

/// How long a serving process with nothing to serve stays up in
/// [`a_shim_no_create_reaches_exits`] (`WASMRUNNER_MANAGER_IDLE_SECS`).
const UNUSED_SECS: u64 = 2;

/// containerd can give up on a shim between `shim start` and Create (it died, or its Create
/// failed before reaching the shim). The serving process that start spawned, its zygote and
/// its spare then have nothing to serve and nobody to end them: they exit by themselves once
/// the idle time is up, and take their socket with them. Here `shim start` is run as
/// containerd runs it, and no Create follows.
fn a_shim_no_create_reaches_exits(env: &Env) -> Result<()> {
    let id = env.container_id("unused");
    let namespace = env.containerd.namespace.clone();
    let bundle = env.containerd.root().join(format!("bundle-{id}"));
    std::fs::create_dir_all(&bundle)?;
    // What `shim start` reads of the bundle: the spec's annotations (none: no pod).
    std::fs::write(
        bundle.join("config.json"),
        r#"{"ociVersion":"1.0.2","process":{"user":{"uid":0,"gid":0},"args":["/hello.wasm"],"cwd":"/"},"root":{"path":"rootfs"}}"#,
    )?;
    let socket = env.containerd.socket();
    let started = Command::new(env.engine.binary()?)
        .current_dir(&bundle)
        .env("TTRPC_ADDRESS", format!("{}.ttrpc", socket.display()))
        .env("WASMRUNNER_MANAGER_IDLE_SECS", UNUSED_SECS.to_string())
        .args(["-namespace", &namespace, "-id", &id, "-address"])
        .arg(&socket)
        .arg("start")
        .output()
        .context("running `shim start`")?;
    let address = String::from_utf8_lossy(&started.stdout).trim().to_string();
    ensure!(
        started.status.success() && !address.is_empty(),
        "`shim start` failed ({}): {address} {}",
        started.status,
        String::from_utf8_lossy(&started.stderr)
    );
    let checked = (|| {
        let path = PathBuf::from(address.strip_prefix("unix://").unwrap_or(&address));
        let server = server_of(env, &env.containerd, &namespace, &id)
            .with_context(|| format!("no serving process for {id} after its start"))?;
        // The serving process forks its zygote and spare as it comes up.
        let helpers = procs::poll(Duration::from_secs(5), || {
            let children = procs::children(server);
            (children.len() == 2).then_some(children)
        })
        .unwrap_or_default();
        let mut family = vec![server];
        family.extend(helpers.into_iter().map(|child| child.pid));
        ensure!(
            family.len() == 3 && path.exists(),
            "expected the serving process, its zygote and its spare, and its socket {}; \
             found {family:?}",
            path.display()
        );
        let left = procs::wait_gone(&family, Duration::from_secs(UNUSED_SECS + 20));
        for &pid in &left {
            let _ = procs::kill9(pid);
        }
        ensure!(
            left.is_empty(),
            "{left:?} of {family:?} still run {} s after a start that no Create followed",
            UNUSED_SECS + 20
        );
        ensure!(
            !path.exists(),
            "the socket {} outlived its shim",
            path.display()
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&bundle);
    checked
}

const PROBE: TestImage = TestImage::Probe(Target::WasiP1);
const HELLO_IMAGE: TestImage = TestImage::Hello(Target::WasiP1, Flavour::Image);
const WAIT: Duration = Duration::from_secs(30);
/// How long a slow compile may take to start (its image's import included) on a loaded node.
const COMPILE_START: Duration = Duration::from_secs(60);
/// A full compile of a [`TestImage::SlowCompile`] module, on a loaded node.
const COMPILE: Duration = Duration::from_secs(180);

/// The `comm` of a shim's zygote and its spare (`wasmrunner_shim::container::ZYGOTE_NAME`,
/// `ZYGOTE_SPARE_NAME`).
const ZYGOTE: &str = "wr-zygote";
const ZYGOTE_SPARE: &str = "wr-zygote-spare";
/// The `comm` of a child compiling a module on the host (`...::container::COMPILER_NAME`).
const COMPILER: &str = "wr-compile";

/// A module seed of this engine, mode and case: no two cases share a cache entry (a module
/// another case compiled first would not be compiled again).
fn seed(env: &Env, case: u32) -> u32 {
    let label = env.engine.label();
    label
        .bytes()
        .fold(case.wrapping_mul(0x9e37_79b9), |acc, b| {
            acc.rotate_left(5) ^ u32::from(b)
        })
}

fn secs(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

/// A `ctr` command running in the background, what it prints captured.
struct Background {
    command: String,
    child: Child,
    stdout: Capture,
    stderr: Capture,
}

impl Background {
    fn spawn(mut command: Command) -> Result<Self> {
        let description = describe(&command);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting `{description}`"))?;
        Ok(Self {
            command: description,
            stdout: Capture::start(child.stdout.take()),
            stderr: Capture::start(child.stderr.take()),
            child,
        })
    }

    /// Whether it has returned, waiting up to `timeout`.
    fn returned_within(&mut self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(true);
            }
            if Instant::now() > deadline {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait(mut self, limit: Duration) -> Result<Outcome> {
        let status = wait_within(&mut self.child, limit)?;
        let mut stderr = self.stderr.finish();
        if status.is_none() {
            stderr.push_str(&format!("(killed: still running after {limit:?})\n"));
        }
        Ok(Outcome {
            command: self.command,
            status: status.and_then(|s| s.code()),
            stdout: self.stdout.finish(),
            stderr,
        })
    }
}

/// `ctr run` of `image` as container `id` in `namespace` of `containerd`, with `flags` and
/// the image's platform when it is an artifact.
fn ctr_run(
    env: &Env,
    containerd: &Containerd,
    namespace: &str,
    flags: &[&str],
    image: TestImage,
    id: &str,
    args: &[&str],
) -> Command {
    let mut command = containerd.ctr_command_in(namespace);
    command
        .args(["run", "--runtime", &env.engine.runtime()])
        .args(flags);
    if image.has_wasm_layers() {
        command.args(["--platform", "wasi/wasm"]);
    }
    command.arg(image.name()).arg(id).args(args);
    command
}

/// Builds `image` and imports it into `namespace` of `containerd` (a containerd of the case's
/// own, or a namespace of its own).
fn import(containerd: &Containerd, namespace: &str, image: TestImage) -> Result<()> {
    let archive = containerd.root().join(format!(
        "{namespace}-{}.tar",
        image.name().replace(['/', ':'], "_")
    ));
    wasmrunner_oci::write_archive(&image.spec()?, &archive)
        .with_context(|| format!("building {}", image.name()))?;
    let path = archive.to_string_lossy().into_owned();
    let mut args = vec!["image", "import"];
    if image.has_wasm_layers() {
        args.push("--all-platforms");
    }
    args.push(&path);
    containerd.ctr_in(namespace, &args)?.ok()?;
    Ok(())
}

/// The STATUS column of `ctr task ls` for `id` in `namespace`; `None` when not listed.
fn task_status(containerd: &Containerd, namespace: &str, id: &str) -> Result<Option<String>> {
    Ok(task_row(containerd, namespace, id)?.map(|(_, status)| status))
}

fn task_row(containerd: &Containerd, namespace: &str, id: &str) -> Result<Option<(u32, String)>> {
    let listing = containerd
        .ctr_in(namespace, &["task", "ls"])?
        .ok()
        .context("`ctr task ls`")?;
    Ok(listing.stdout.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [task, pid, status] if *task == id => Some((pid.parse().ok()?, status.to_string())),
            _ => None,
        }
    }))
}

fn wait_for_status(containerd: &Containerd, namespace: &str, id: &str, status: &str) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = task_status(containerd, namespace, id)?;
        if now.as_deref() == Some(status) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("task {id} is {now:?}, not {status}, after {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Nothing of container `id` of `namespace` is left on the host.
fn assert_gone(env: &Env, containerd: &Containerd, namespace: &str, id: &str) -> Result<()> {
    let mut trace = Trace::new(id, namespace);
    trace.manager = env.engine.manager_binary();
    trace.containerd_dirs = containerd.dirs();
    // A per-pod shim's socket goes with it (a manager may serve on).
    if env.engine.mode == Mode::PerPod {
        trace.paths.push(containerd.shim_socket(namespace, id));
    }
    assert_clean(&trace)
}

/// The process that serves container `id` of `namespace`: the namespace's manager, or the
/// per-pod shim started for it (`-id <id>`; not containerd's short `start`/`delete` runs).
fn server_of(env: &Env, containerd: &Containerd, namespace: &str, id: &str) -> Option<u32> {
    if env.engine.mode == Mode::Shared {
        let managers = containerd.managers(&env.engine.binary_name(), namespace);
        return match managers.as_slice() {
            [manager] => Some(*manager),
            _ => None,
        };
    }
    let shims = containerd.shim_processes();
    let family: Vec<u32> = shims.iter().map(|(pid, _)| *pid).collect();
    shims.iter().find_map(|(pid, cmdline)| {
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        let serves = words.windows(2).any(|w| w[0] == "-id" && w[1] == id)
            && words
                .windows(2)
                .any(|w| w[0] == "-namespace" && w[1] == namespace)
            && !words
                .last()
                .is_some_and(|w| *w == "start" || *w == "delete");
        let root = parent_of(*pid).is_none_or(|parent| !family.contains(&parent));
        (serves && root).then_some(*pid)
    })
}

/// The compile under way in `server`: its child under a CPU-time limit, which only the
/// compiling process has (`WASMRUNNER_COMPILE_MAX_CPU_SECS`, applied in the child).
fn compiler_of(server: u32) -> Option<Process> {
    procs::children(server)
        .into_iter()
        .find(|child| child.cpu_limit().is_some())
}

/// Waits until the Create of container `id` compiles in its server; returns the server's
/// pid and the compiling child.
fn wait_for_compile(
    env: &Env,
    containerd: &Containerd,
    namespace: &str,
    id: &str,
) -> Result<(u32, Process)> {
    procs::poll(COMPILE_START, || {
        let server = server_of(env, containerd, namespace, id)?;
        Some((server, compiler_of(server)?))
    })
    .with_context(|| {
        format!(
            "no compile started for {id} within {COMPILE_START:?}; shims: {:?}",
            containerd.shim_processes()
        )
    })
}

/// What tells that the compile of `image` completed: its node cache entry (rootfs module),
/// or containerd's precompiled-code label on its layer (artifact).
fn compiled(containerd: &Containerd, namespace: &str, image: TestImage) -> Result<bool> {
    match image {
        TestImage::SlowCompile {
            flavour: Flavour::Image,
            kib,
            seed,
        } => {
            let sha256 = sha256_hex(&slow_compile_module(kib as usize * 1024, seed));
            Ok(containerd.module_cache_entries().iter().any(|entry| {
                entry
                    .file_name()
                    .is_some_and(|name| name == sha256.as_str())
            }))
        }
        _ => {
            let listing = containerd.ctr_in(namespace, &["content", "ls"])?.ok()?;
            Ok(listing.stdout.contains("runwasi.io/precompiled"))
        }
    }
}

/// Temporary files of the node cache (a writer's `.<sha256>.<pid>.<n>.tmp`).
fn cache_temporaries(containerd: &Containerd) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![containerd.module_cache_dir()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "tmp") {
                found.push(path);
            }
        }
    }
    found
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// 1. The zygote killed while containers run and while new ones start.

/// The probe's `compute` loop (`test/fixtures/src/bin/probe.rs`), for the checksum a worker
/// must print.
fn compute(rounds: u64) -> u64 {
    let mut table = [0u64; 8192];
    for (i, slot) in table.iter_mut().enumerate() {
        *slot = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..rounds {
        let slot = (x >> 51) as usize;
        let seen = table[slot];
        x = (x ^ seen)
            .wrapping_mul(6364136223846793005)
            .wrapping_add(round);
        x ^= x >> 29;
        table[slot] = seen.rotate_left(7) ^ x;
    }
    x
}

/// kill -9 of the zygote while containers of its shim (or manager) run and while new ones
/// are being created, twice. `shared::a_killed_zygote_is_replaced` kills it beside one idle
/// container; here two workers are busy computing when it dies, and must still finish on
/// their own, exit 0 and print the right checksum (their exit is seen and their output
/// reaches `ctr` although the zygote that built them is gone), and four containers are being
/// created as it dies: each must run. The zygote is the one process named `wr-zygote`, as an
/// operator finds it (`pgrep -x`): the builders, compilers and deleters forked from it take
/// names of their own at once, which the case checks. Per pod, every container joins one pod
/// (CRI's sandbox-id annotation, as kubelet's containers of a pod do) and so one shim;
/// shared, a namespace of its own, so that its manager serves nothing else.
fn zygote_killed_while_containers_run_and_start(env: &Env) -> Result<()> {
    let containerd = &env.containerd;
    let namespace = match env.engine.mode {
        Mode::Shared => format!("{}-zygote-{}", containerd.namespace, env.engine.label()),
        Mode::PerPod => containerd.namespace.clone(),
    };
    if env.engine.mode == Mode::Shared {
        for image in [PROBE, HELLO_IMAGE] {
            import(containerd, &namespace, image)?;
        }
    } else {
        env.image(PROBE)?;
        env.image(HELLO_IMAGE)?;
    }
    let result = zygote_case(env, &namespace);
    if env.engine.mode == Mode::Shared {
        for failure in remove_cgroup(&format!("/{namespace}")) {
            eprintln!("{failure}");
        }
    }
    result
}

fn zygote_case(env: &Env, namespace: &str) -> Result<()> {
    let containerd = &env.containerd;
    let pod = format!(
        "io.kubernetes.cri.sandbox-id={}",
        env.container_id("zygote-pod")
    );
    let flags = ["--annotation", pod.as_str()];
    // About 2.5 s of work on an idle node (WasmEdge interprets, some 50 times slower): they
    // run through the first round, and end in the second or after it.
    let rounds: u64 = if env.engine.name == "wasmedge" {
        10_000_000
    } else {
        200_000_000
    };
    let rounds_arg = rounds.to_string();
    let mut workers = Vec::new();
    for _ in 0..2 {
        let id = env.container_id("worker");
        let command = ctr_run(
            env,
            containerd,
            namespace,
            &flags,
            PROBE,
            &id,
            &["/probe.wasm", "compute", &rounds_arg],
        );
        workers.push((id, Background::spawn(command)?));
    }
    for (id, _) in &workers {
        wait_for_status(containerd, namespace, id, "RUNNING")?;
    }
    let ids: Vec<String> = workers.iter().map(|(id, _)| id.clone()).collect();
    let result = zygote_rounds(env, namespace, &flags, workers, rounds);
    if result.is_err() {
        for id in &ids {
            let _ = containerd.ctr_in(namespace, &["task", "kill", "--signal", "SIGKILL", id]);
            let _ = containerd.ctr_in(namespace, &["task", "delete", "--force", id]);
            let _ = containerd.ctr_in(namespace, &["containers", "rm", id]);
        }
    }
    result
}

/// Two rounds of a zygote killed among four creates while `workers` compute `rounds`.
fn zygote_rounds(
    env: &Env,
    namespace: &str,
    flags: &[&str; 2],
    workers: Vec<(String, Background)>,
    rounds: u64,
) -> Result<()> {
    let containerd = &env.containerd;
    let expected = std::thread::spawn(move || compute(rounds));
    let (first_pid, _) = task_row(containerd, namespace, &workers[0].0)?.context("worker")?;
    let server = parent_of(first_pid).context("the worker has no parent")?;
    let mut bursts = Vec::new();
    for round in 1..=2 {
        let zygotes = procs::children_named(server, ZYGOTE);
        let [zygote] = zygotes.as_slice() else {
            bail!("round {round}: expected one {ZYGOTE} under {server}, found {zygotes:?}");
        };
        let before: Vec<u32> = procs::children(server).iter().map(|p| p.pid).collect();
        // Four creates at once; once they are under way (their builders forked), every
        // process of the server named like the zygote is killed.
        let starts: Vec<(String, Background)> = (0..4)
            .map(|_| {
                let id = env.container_id("burst");
                let command = ctr_run(
                    env,
                    containerd,
                    namespace,
                    &["--rm", flags[0], flags[1]],
                    HELLO_IMAGE,
                    &id,
                    &[],
                );
                Ok((id, Background::spawn(command)?))
            })
            .collect::<Result<_>>()?;
        let busy = procs::poll(Duration::from_secs(10), || {
            let children = procs::children(server);
            children
                .iter()
                .any(|child| !before.contains(&child.pid))
                .then_some(children)
        });
        let named = procs::children_named(server, ZYGOTE);
        ensure!(
            named.contains(zygote),
            "round {round}: the zygote {zygote} is gone before it was killed"
        );
        procs::kill9(*zygote).with_context(|| format!("killing the zygote {zygote}"))?;
        let killed_at = Instant::now();
        // Any other process named like the zygote is a child it has just forked, which takes
        // its own name (`wr-build`, ...) as its first act: it must not keep the zygote's.
        std::thread::sleep(Duration::from_millis(200));
        let named_on: Vec<Process> = named
            .iter()
            .filter(|pid| *pid != zygote)
            .filter_map(|pid| Process::of(*pid))
            .filter(|p| p.alive() && p.name == ZYGOTE)
            .collect();
        if round == 1 {
            for (id, _) in &workers {
                let status = task_status(containerd, namespace, id)?;
                ensure!(
                    status.as_deref() == Some("RUNNING"),
                    "worker {id} is {status:?} right after its zygote was killed"
                );
            }
        }
        let mut failed = Vec::new();
        for (id, start) in starts {
            let out = start.wait(WAIT * 2)?;
            assert_gone(env, containerd, namespace, &id)
                .with_context(|| format!("round {round}: `ctr run --rm {id}` said: {out}"))?;
            if !(out.success() && out.stdout.contains(HELLO)) {
                failed.push(out.to_string());
            }
        }
        let burst = killed_at.elapsed();
        ensure!(
            failed.is_empty(),
            "round {round}: {} of 4 containers created as the zygote was killed failed \
             (killed: {named:?}, the zygote {zygote}; children of {server} then: {busy:?}):\n{}",
            failed.len(),
            failed.join("\n")
        );
        ensure!(
            named_on.is_empty(),
            "round {round}: besides the zygote {zygote}, {named_on:?} still go by its name 200 ms \
             later (`pkill -x {ZYGOTE}` kills them too); children of {server}: {busy:?}"
        );
        let (zygotes, spares) = (
            procs::children_named(server, ZYGOTE),
            procs::children_named(server, ZYGOTE_SPARE),
        );
        ensure!(
            zygotes.len() == 1 && !zygotes.contains(zygote) && spares.len() == 1,
            "round {round}: expected a new zygote and a spare under {server}, found {zygotes:?} and {spares:?}"
        );
        bursts.push(burst);
    }
    let expected = expected.join().map_err(|_| anyhow::anyhow!("compute"))?;
    let mut finished = Vec::new();
    for (id, worker) in workers {
        let out = worker.wait(COMPILE)?;
        ensure!(
            out.success()
                && out
                    .stdout
                    .starts_with(&format!("checksum={expected:016x} elapsed_us=")),
            "worker {id}, running as its zygote was killed, did not finish with its checksum \
             {expected:016x}: {out}"
        );
        finished.push(out.stdout.trim().to_string());
        containerd
            .ctr_in(namespace, &["containers", "rm", &id])?
            .ok()?;
        assert_gone(env, containerd, namespace, &id)?;
    }
    println!(
        "faults: {}: zygote killed twice among 4 creates each: all 8 ran (each burst done {} and {} after the kill); workers: {finished:?}",
        env.engine.label(),
        secs(bursts[0]),
        secs(bursts[1])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 2. A per-pod shim, or the manager, killed in the middle of a compile.

/// kill -9 of the process serving a Create (the per-pod shim; in shared mode the manager)
/// while it compiles the container's module: a big rootfs module into the node module cache
/// (Wasmtime), or a wasm layer into containerd's content store (WasmEdge, containerd that
/// imports artifacts). "Mid-compile" is when the server's compiling child (the only one with
/// a CPU-time limit) exists. Then: `ctr run` fails, saying why; `ctr task ls` and
/// `ctr containers rm` work; no process of the killed server (zygotes, the compiler) is left,
/// nor any mount or cgroup of the container; the cut compile left no cache entry and no
/// temporary file; the next run of the same module (a new shim or manager, started by
/// containerd) compiles it and prints its line, and the run after that one uses the entry
/// it left. In a namespace of its own, so that a killed manager serves nothing else.
fn server_killed_mid_compile(env: &Env) -> Result<()> {
    let containerd = &env.containerd;
    let namespace = format!("{}-midcompile-{}", containerd.namespace, env.engine.label());
    let image = env
        .host_compiled(seed(env, 2))
        .context("nothing to compile on the host")?;
    import(containerd, &namespace, image)?;
    let result = mid_compile_case(env, &namespace, image);
    for failure in remove_cgroup(&format!("/{namespace}")) {
        eprintln!("{failure}");
    }
    result
}

fn mid_compile_case(env: &Env, namespace: &str, image: TestImage) -> Result<()> {
    let containerd = &env.containerd;
    let id = env.container_id("midcompile");
    let run = Background::spawn(ctr_run(env, containerd, namespace, &[], image, &id, &[]))?;
    let (server, compiler) = wait_for_compile(env, containerd, namespace, &id)?;
    let family: Vec<u32> = procs::descendants(server).iter().map(|p| p.pid).collect();
    std::thread::sleep(Duration::from_millis(300));
    ensure!(
        procs::alive(compiler.pid),
        "the compile ({}) ended within 300 ms: too short to be cut",
        compiler.pid
    );
    let name = Process::of(compiler.pid).map(|p| p.name);
    ensure!(
        name.as_deref() == Some(COMPILER),
        "the compiling child {} is named {name:?} in `ps`, not {COMPILER}",
        compiler.pid
    );
    procs::kill9(server)?;
    let killed = Instant::now();
    let out = run.wait(WAIT)?;
    let failed_after = killed.elapsed();
    ensure!(
        out.status.is_some_and(|status| status != 0),
        "`ctr run` did not fail although its server {server} was killed mid-compile: {out}"
    );
    let mut left = procs::wait_gone(&family, Duration::from_secs(10));
    left.retain(|pid| *pid != server);
    ensure!(
        left.is_empty() && !procs::alive(server),
        "processes of the killed server {server} still alive: {:?}",
        left.iter()
            .filter_map(|pid| Process::of(*pid))
            .collect::<Vec<_>>()
    );
    let listed = task_status(containerd, namespace, &id)?;
    if listed.is_some() {
        containerd
            .ctr_in(namespace, &["task", "delete", "--force", &id])?
            .ok()?;
    }
    containerd
        .ctr_in(namespace, &["containers", "rm", &id])?
        .ok()
        .context("removing the container whose server died")?;
    assert_gone(env, containerd, namespace, &id)
        .with_context(|| format!("after killing {server} mid-compile"))?;
    ensure!(
        !compiled(containerd, namespace, image)?,
        "the compile finished before its server was killed: nothing was cut"
    );
    let temporaries = cache_temporaries(containerd);
    ensure!(
        temporaries.is_empty(),
        "the cut compile left temporary files: {temporaries:?}"
    );

    let mut reruns = Vec::new();
    for round in ["compiles", "uses the cache"] {
        let again = env.container_id("recompiled");
        let started = Instant::now();
        let mut command = ctr_run(env, containerd, namespace, &["--rm"], image, &again, &[]);
        let out = wasmrunner_e2e::command::run_command_within(&mut command, COMPILE)?;
        reruns.push(started.elapsed());
        ensure!(
            out.success() && out.stdout.trim_end() == SLOW_COMPILE_RAN,
            "the next run of the module, after its compile was cut, failed ({round}): {out}\n{}",
            containerd.log_tail()
        );
        assert_gone(env, containerd, namespace, &again)?;
        ensure!(
            compiled(containerd, namespace, image)?,
            "after a run that {round}, the module's compiled code is not kept"
        );
    }
    if env.engine.mode == Mode::Shared {
        let managers = containerd.managers(&env.engine.binary_name(), namespace);
        ensure!(
            managers.len() == 1 && !managers.contains(&server),
            "expected one new manager, found {managers:?} (killed: {server})"
        );
    }
    let what = match env.engine.mode {
        Mode::Shared => "manager",
        Mode::PerPod => "per-pod shim",
    };
    println!(
        "faults: {}: {what} killed mid-compile of {}; `ctr run` failed after {} with {:?}: {}; \
         task ls then: {listed:?}; next run {} (compiled), then {} (cached)",
        env.engine.label(),
        image.name(),
        secs(failed_after),
        out.status,
        out.stderr.trim(),
        secs(reruns[0]),
        secs(reruns[1])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 3. containerd killed in the middle of a Create.

/// containerd is killed with SIGKILL while a Create compiles in the shim, and started again
/// on the same root and state (on a containerd of the case's own). What containerd does:
///
/// - `ctr run -d` loses containerd and fails (1.6.20: "transport is closing"; 1.7.24 and
///   2.1.9: "error reading from server: EOF"), and removes the task's output fifos. The shim
///   (per pod) or manager is not containerd's child and goes on with the Create.
/// - 1.6.20, restarted, reconnects to the shim at each bundle's `address` and lists the task
///   as the shim has it. The Create there fails, its output fifos gone, so no task is listed,
///   and nothing ever deletes one: the shim has to unmount the rootfs itself and exit once
///   idle, after which containerd cleans the bundle up as for a dead shim (`shim delete`).
/// - 1.7.24 and 2.1.9, restarted, find no task in the shim (the Create is still compiling)
///   and take it for a leaked one (containerd#6860, "cleaning leaked shim process"): Delete
///   (not found), Shutdown, the bundle removed, `shim delete`. The shim must then give the
///   Create up and write nothing more into the bundle.
/// - Had the Create completed first, the task would be listed CREATED, never started (the
///   `ctr run` that would start it is gone), and removable like any task.
///
/// The case asserts that the container ends either running correctly or removable with
/// nothing left of it (processes, mounts, cgroups, bundle), and that new containers then run.
fn containerd_killed_mid_create(env: &Env) -> Result<()> {
    env.with_own_containerd("crash", |containerd| crash_case(env, containerd))
}

fn crash_case(env: &Env, containerd: &mut Containerd) -> Result<()> {
    let namespace = containerd.namespace.clone();
    let image = env
        .host_compiled(seed(env, 3))
        .context("nothing to compile on the host")?;
    for image in [image, HELLO_IMAGE] {
        import(containerd, &namespace, image)?;
    }
    let id = env.container_id("crash");
    let run = Background::spawn(ctr_run(
        env,
        containerd,
        &namespace,
        &["-d"],
        image,
        &id,
        &[],
    ))?;
    let (server, compiler) = wait_for_compile(env, containerd, &namespace, &id)?;
    let down = containerd.kill_and_restart()?;
    let out = run.wait(WAIT)?;
    ensure!(
        !out.success(),
        "`ctr run -d` succeeded although containerd was killed during its Create: {out}"
    );
    // The compile goes on in the shim, which containerd reconnects to.
    ensure!(
        procs::alive(server),
        "the server {server} died with containerd"
    );
    let done = procs::wait_gone(&[compiler.pid], COMPILE);
    ensure!(done.is_empty(), "the compile never finished");
    let settled = Instant::now();
    let mut seen = Vec::new();
    let status = loop {
        let status = task_status(containerd, &namespace, &id)?;
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if matches!(status.as_deref(), Some("CREATED" | "RUNNING" | "STOPPED"))
            || settled.elapsed() > Duration::from_secs(10)
        {
            break status;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    match status.as_deref() {
        Some("RUNNING" | "CREATED") => {
            containerd
                .ctr_in(&namespace, &["task", "kill", "--signal", "SIGKILL", &id])?
                .ok()
                .with_context(|| format!("killing the {status:?} task"))?;
            wait_for_status(containerd, &namespace, &id, "STOPPED")?;
            containerd.ctr_in(&namespace, &["task", "delete", &id])?;
        }
        Some("STOPPED") => {
            containerd
                .ctr_in(&namespace, &["task", "delete", &id])?
                .ok()?;
        }
        None => {}
        Some(other) => bail!("after the restart, task {id} is {other}"),
    }
    ensure!(
        task_status(containerd, &namespace, &id)?.is_none(),
        "the task is still listed after its delete"
    );
    containerd
        .ctr_in(&namespace, &["containers", "rm", &id])?
        .ok()?;
    assert_gone(env, containerd, &namespace, &id)?;
    let mut ran = Vec::new();
    for (image, line) in [(image, SLOW_COMPILE_RAN), (HELLO_IMAGE, HELLO)] {
        let fresh = env.container_id("after-crash");
        let mut command = ctr_run(env, containerd, &namespace, &["--rm"], image, &fresh, &[]);
        let started = Instant::now();
        let out = wasmrunner_e2e::command::run_command_within(&mut command, COMPILE)?;
        ensure!(
            out.success() && out.stdout.trim_end() == line,
            "a new container after containerd's restart did not run: {out}\n{}",
            containerd.log_tail()
        );
        ran.push(started.elapsed());
        assert_gone(env, containerd, &namespace, &fresh)?;
    }
    // What the shim and containerd said about the lost Create.
    let log = std::fs::read_to_string(containerd.root().join("containerd.log")).unwrap_or_default();
    let said: Vec<&str> = log
        .lines()
        .filter(|line| {
            line.contains(&id)
                && [
                    "was not created",
                    "given up",
                    "leaked shim",
                    "cleaning up dead shim",
                ]
                .iter()
                .any(|needle| line.contains(needle))
        })
        .map(|line| line.split_once("msg=").map_or(line, |(_, msg)| msg))
        .collect();
    println!(
        "faults: {}: containerd {} killed mid-Create, back in {}; `ctr run -d` failed with {:?}: {}; \
         the task after the restart: {seen:?}; logged: {said:?}; new containers ran in {} (same module) and {}",
        env.engine.label(),
        containerd.version,
        secs(down),
        out.status,
        out.stderr.trim(),
        secs(ran[0]),
        secs(ran[1])
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 4. The node cache's disk full, or read-only.

/// A filesystem mounted over a folder for the length of a case; unmounted when dropped,
/// whatever the case's outcome.
struct Mounted {
    path: PathBuf,
}

impl Mounted {
    /// `mount -t tmpfs -o <options> tmpfs <path>`.
    fn tmpfs(path: &Path, options: &str, read_only: bool) -> Result<Self> {
        let flags = if read_only { libc::MS_RDONLY } else { 0 };
        mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(options))?;
        Ok(Self {
            path: path.to_path_buf(),
        })
    }

    /// `path` bound over itself, then made read-only.
    fn read_only_bind(path: &Path) -> Result<Self> {
        mount(
            Some(path.to_str().context("path")?),
            path,
            None,
            libc::MS_BIND,
            None,
        )?;
        let this = Self {
            path: path.to_path_buf(),
        };
        mount(
            None,
            path,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        )?;
        Ok(this)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let Ok(path) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) else {
            return;
        };
        // SAFETY: umount2 reads a NUL-terminated path that outlives the call.
        if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
            eprintln!(
                "cannot unmount {}: {}",
                self.path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

fn mount(
    source: Option<&str>,
    target: &Path,
    fs_type: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    let cstring = |s: &str| std::ffi::CString::new(s).context("a NUL byte");
    let source = source.map(cstring).transpose()?;
    let target_c = cstring(target.to_str().context("path")?)?;
    let fs_type = fs_type.map(cstring).transpose()?;
    let data = data.map(cstring).transpose()?;
    let ptr = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    let mounted = unsafe {
        libc::mount(
            ptr(&source),
            target_c.as_ptr(),
            ptr(&fs_type),
            flags,
            ptr(&data).cast(),
        )
    };
    if mounted != 0 {
        bail!(
            "mounting over {}: {}",
            target.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// `ctr run --rm` of `image` on `containerd`; checks that nothing of it is left.
fn run_rm(env: &Env, containerd: &Containerd, image: TestImage, args: &[&str]) -> Result<Outcome> {
    let id = env.container_id("cache");
    let namespace = containerd.namespace.clone();
    let mut command = ctr_run(env, containerd, &namespace, &["--rm"], image, &id, args);
    let out = wasmrunner_e2e::command::run_command_within(&mut command, COMPILE)?;
    assert_gone(env, containerd, &namespace, &id)?;
    Ok(out)
}

/// Waits (containerd copies the shims' log a moment after it is written) until containerd's
/// log has a line with every one of `needles`.
fn log_has(containerd: &Containerd, needles: &[&str]) -> bool {
    procs::poll(Duration::from_secs(5), || {
        let log = std::fs::read_to_string(containerd.root().join("containerd.log")).ok()?;
        log.lines()
            .any(|line| needles.iter().all(|needle| line.contains(needle)))
            .then_some(())
    })
    .is_some()
}

/// The node cache's disk is full (a 1 MiB tmpfs over the cache folder of a containerd of
/// the case's own, filled up): a module the node has never seen still runs, compiled in its
/// container; the shim logs why the cache was not written, and leaves no entry and no
/// temporary file. Engines without the cache leave it alone.
fn node_cache_disk_full(env: &Env) -> Result<()> {
    env.with_own_containerd("full", |containerd| {
        import(containerd, &containerd.namespace, PROBE)?;
        let cache = containerd.module_cache_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cache)?;
        let _mounted = Mounted::tmpfs(&cache, "size=1m,mode=0700", false)?;
        let filled = fill(&cache.join("filler"))?;
        let started = Instant::now();
        let out = run_rm(
            env,
            containerd,
            PROBE,
            &["/probe.wasm", "cat", "/data/greeting.txt"],
        )?;
        let took = started.elapsed();
        ensure!(
            out.success() && out.stdout == GREETING,
            "a module did not run with the node cache's disk full: {out}\n{}",
            containerd.log_tail()
        );
        check_cache_unwritten(env, containerd, "No space left on device")?;
        println!(
            "faults: {}: node cache disk full ({filled} bytes filled): the module ran in {}, \
             entries: {:?}",
            env.engine.label(),
            secs(took),
            containerd.module_cache_entries()
        );
        Ok(())
    })
}

/// Writes `path` until the filesystem is full; returns how many bytes it took.
fn fill(path: &Path) -> Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let block = vec![0xa5u8; 4096];
    let mut written = 0u64;
    loop {
        match file.write(&block) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("filling the cache's disk"),
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

/// After a run on a broken cache: engines with the cache logged `reason` and left no entry
/// and no temporary file; the others did not touch it.
fn check_cache_unwritten(env: &Env, containerd: &Containerd, reason: &str) -> Result<()> {
    let entries = containerd.module_cache_entries();
    let temporaries = cache_temporaries(containerd);
    ensure!(
        entries.is_empty() && temporaries.is_empty(),
        "the broken cache has entries {entries:?} and temporary files {temporaries:?}"
    );
    if env.engine.has_node_module_cache() {
        ensure!(
            log_has(containerd, &["level=warn", "node module cache", reason]),
            "no warning in containerd's log that the node cache could not be written ({reason})\n{}",
            containerd.log_tail()
        );
    } else {
        let engine_dir = containerd.module_cache_dir().join(&env.engine.name);
        ensure!(
            !engine_dir.exists(),
            "{} has no node cache, yet {} exists",
            env.engine.name,
            engine_dir.display()
        );
    }
    Ok(())
}

/// The node cache is read-only (its folder bound over itself read-only, on a containerd of
/// the case's own): a module already in it is still mapped from it, a module not in it runs
/// compiled in its container with a warning in containerd's log, and nothing is written.
/// Then the cache is unmounted and works again.
fn node_cache_read_only(env: &Env) -> Result<()> {
    env.with_own_containerd("readonly", |containerd| {
        for image in [PROBE, HELLO_IMAGE] {
            import(containerd, &containerd.namespace, image)?;
        }
        // The probe first, so that the cache has it.
        run_rm(env, containerd, PROBE, &["/probe.wasm", "exit", "0"])?.ok()?;
        let before = containerd.module_cache_entries();
        let cache = containerd.module_cache_dir();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cache)?;
        let mut mapped = None;
        let maps_cached_code = env.engine.maps_cached_code();
        {
            let _mounted = Mounted::read_only_bind(&cache)?;
            let cached = run_rm(
                env,
                containerd,
                PROBE,
                &["/probe.wasm", "cat", "/data/greeting.txt"],
            )?;
            ensure!(
                cached.success() && cached.stdout == GREETING,
                "a cached module did not run from a read-only cache: {cached}"
            );
            if let [entry] = before.as_slice()
                && maps_cached_code
            {
                mapped = Some(maps_entry(env, containerd, entry)?);
            }
            let out = run_rm(env, containerd, HELLO_IMAGE, &[])?;
            ensure!(
                out.success() && out.stdout.trim_end() == HELLO,
                "a module did not run with the node cache read-only: {out}\n{}",
                containerd.log_tail()
            );
            ensure!(
                containerd.module_cache_entries() == before,
                "the read-only cache changed: {:?} -> {:?}",
                before,
                containerd.module_cache_entries()
            );
            if env.engine.has_node_module_cache() {
                ensure!(
                    before.len() == 1 && (mapped == Some(true) || !maps_cached_code),
                    "the probe's entry {before:?} was not mapped from the read-only cache"
                );
                ensure!(
                    log_has(
                        containerd,
                        &["level=warn", "node module cache", "Read-only file system"]
                    ),
                    "no warning in containerd's log that the node cache is read-only\n{}",
                    containerd.log_tail()
                );
            } else {
                ensure!(before.is_empty(), "{} cached {before:?}", env.engine.name);
            }
        }
        let out = run_rm(env, containerd, HELLO_IMAGE, &[])?.ok()?;
        ensure!(out.stdout.trim_end() == HELLO, "after the unmount: {out}");
        let after = containerd.module_cache_entries();
        if env.engine.has_node_module_cache() {
            ensure!(
                after.len() == 2,
                "once writable again, the cache should hold the probe and hello: {after:?}"
            );
        }
        println!(
            "faults: {}: node cache read-only: the cached module ran (its entry mapped: {mapped:?}), \
             a new one ran compiled in its container; entries before {}, after the unmount {}",
            env.engine.label(),
            before.len(),
            after.len()
        );
        Ok(())
    })
}

/// Whether a sleeping container of the probe maps the cache entry `entry`.
fn maps_entry(env: &Env, containerd: &Containerd, entry: &Path) -> Result<bool> {
    let namespace = containerd.namespace.clone();
    let id = env.container_id("mapped");
    let mut run = Background::spawn(ctr_run(
        env,
        containerd,
        &namespace,
        &[],
        PROBE,
        &id,
        &["/probe.wasm", "sleep"],
    ))?;
    let result = (|| {
        wait_for_status(containerd, &namespace, &id, "RUNNING")?;
        let (pid, _) = task_row(containerd, &namespace, &id)?.context("no task")?;
        let maps = procs::poll(Duration::from_secs(10), || {
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
            maps.contains(&*entry.to_string_lossy()).then_some(maps)
        });
        Ok(maps.is_some())
    })();
    let _ = containerd.ctr_in(&namespace, &["task", "kill", "--signal", "SIGKILL", &id]);
    let _ = run.returned_within(WAIT);
    let _ = run.wait(WAIT);
    let _ = containerd.ctr_in(&namespace, &["containers", "rm", &id]);
    assert_gone(env, containerd, &namespace, &id)?;
    result
}

// ---------------------------------------------------------------------------------------
// 5. A workload that never returns, stopped with a grace period.

/// The grace period the cases give.
const GRACE: Duration = Duration::from_secs(2);
/// What may pass between the end of the grace period (or a SIGKILL) and the exit.
const EXIT_SLACK: Duration = Duration::from_secs(3);

/// A supervisor's stop, as kubelet does it and `ctr` leaves to its user: `ctr task kill`
/// (SIGTERM), and SIGKILL if the task is still running once the grace period is over.
/// Returns the status `ctr run` ended with and how long after the first signal.
fn stop_like_a_supervisor(
    env: &Env,
    mut task: Background,
    id: &str,
    signal: &str,
) -> Result<(Option<i32>, Duration, bool)> {
    let containerd = &env.containerd;
    let asked = Instant::now();
    containerd
        .ctr(&["task", "kill", "--signal", signal, id])?
        .ok()?;
    let mut escalated = false;
    if !task.returned_within(GRACE)? {
        escalated = true;
        containerd
            .ctr(&["task", "kill", "--signal", "SIGKILL", id])?
            .ok()?;
        ensure!(
            task.returned_within(EXIT_SLACK)?,
            "task {id} still runs {EXIT_SLACK:?} after SIGKILL"
        );
    }
    let took = asked.elapsed();
    let out = task.wait(WAIT)?;
    ensure!(
        out.stdout.starts_with("ready"),
        "task {id} never got going: {out}"
    );
    containerd.ctr(&["containers", "rm", id])?.ok()?;
    env.assert_clean(id)?;
    Ok((out.status, took, escalated))
}

/// Workloads that never return, stopped with `ctr task kill` and a 2 s grace period: a Wasm
/// module spinning in `_start` ends with SIGTERM at once (143: the shim turns SIGTERM into
/// the guest's exit, since WASI has no signals and a namespace's PID 1 without a handler
/// would not hear it); a signal the guest has no handler for (SIGUSR1) changes nothing, and
/// the SIGKILL after the grace period ends it (137); a native program that ignores SIGTERM
/// (the `ignore-term` fixture, through the same shim) ends the same way. Each with nothing
/// left, within the grace period and a few seconds.
fn stop_with_a_grace_period(env: &Env) -> Result<()> {
    let mut figures = Vec::new();
    for (what, image, args, signal, expected) in [
        (
            "spinning module, SIGTERM",
            PROBE,
            &["/probe.wasm", "spin"][..],
            "SIGTERM",
            143,
        ),
        (
            "spinning module, SIGUSR1",
            PROBE,
            &["/probe.wasm", "spin"][..],
            "SIGUSR1",
            137,
        ),
        (
            "sleeping module, SIGUSR1",
            PROBE,
            &["/probe.wasm", "sleep"][..],
            "SIGUSR1",
            137,
        ),
        (
            "native, ignores SIGTERM",
            TestImage::IgnoreTerm,
            &[][..],
            "SIGTERM",
            137,
        ),
    ] {
        let reference = env.image(image)?;
        let id = env.container_id("grace");
        let mut command = env.containerd.ctr_command();
        command
            .args(["run", "--runtime", &env.engine.runtime(), &reference, &id])
            .args(args);
        let task = Background::spawn(command)?;
        wait_for_ready(env, &task, &id)?;
        let (status, took, escalated) = stop_like_a_supervisor(env, task, &id, signal)?;
        ensure!(
            status == Some(expected),
            "{what}: ended with {status:?}, expected {expected}"
        );
        let (least, most) = if expected == 137 {
            (GRACE, GRACE + EXIT_SLACK)
        } else {
            (Duration::ZERO, GRACE)
        };
        ensure!(
            took >= least && took < most && escalated == (expected == 137),
            "{what}: ended {took:?} after the stop was asked for (SIGKILL sent: {escalated}), \
             expected between {least:?} and {most:?}"
        );
        figures.push(format!("{what}: {status:?} after {}", secs(took)));
    }
    println!(
        "faults: {}: stop with a {} grace period: {}",
        env.engine.label(),
        secs(GRACE),
        figures.join("; ")
    );
    Ok(())
}

fn wait_for_ready(env: &Env, task: &Background, id: &str) -> Result<()> {
    procs::poll(WAIT, || {
        task.stdout.snapshot().starts_with("ready").then_some(())
    })
    .with_context(|| {
        format!(
            "task {id} never printed ready: {:?}",
            task.stderr.snapshot()
        )
    })?;
    wait_for_status(&env.containerd, &env.containerd.namespace, id, "RUNNING")
}

/// Through CRI: StopContainer with a timeout on Wasm modules that never return from
/// `_start`. A spinning module, timeout 10 s: SIGTERM ends it (143) at once. A spinning
/// module, timeout 0 (kubelet's forced stop): containerd sends SIGKILL straight away (137).
/// The native sidecar that ignores SIGTERM and ends with SIGKILL after its timeout is
/// `cri::wasm_and_native_sidecar`. The pod then leaves nothing (processes, mounts, cgroups).
fn cri_stop_with_a_timeout(env: &Env) -> Result<()> {
    let mut pod = Pod::run(
        env,
        PodSpec::new("grace", &env.engine.handler(), Network::Host),
    )?;
    let mut figures = Vec::new();
    for (name, timeout, expected) in [("spin-term", 10, 143), ("spin-kill", 0, 137)] {
        let id = pod.run_container(&ContainerSpec::new(name, PROBE, &["spin"]))?;
        pod.wait_for_stdout(name, 0, "ready", WAIT)?;
        pod.wait_running(&id, WAIT)?;
        let (took, status) = pod.stop_container(&id, timeout)?;
        ensure!(
            status.exit_code == expected && status.reason == "Error",
            "{name}: StopContainer with timeout {timeout}: exit {} reason {:?}, expected {expected}",
            status.exit_code,
            status.reason
        );
        ensure!(
            took < EXIT_SLACK,
            "{name}: StopContainer with timeout {timeout} took {took:?}"
        );
        figures.push(format!(
            "timeout {timeout} s: {expected} after {}",
            secs(took)
        ));
    }
    pod.remove()?.assert_clean()?;
    println!(
        "faults: {}: CRI StopContainer of a spinning module: {}",
        env.engine.label(),
        figures.join("; ")
    );
    Ok(())
}
