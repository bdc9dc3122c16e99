//! The shared-manager mode: one manager per engine and namespace, and what happens when the
//! manager, containerd or one workload fails. The restart case runs in both modes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::command::run_command_within;
use wasmrunner_e2e::containerd::{Containerd, parent_of};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::leaks::{Trace, assert_clean, remove_cgroup};
use wasmrunner_e2e::procs;
use wasmrunner_e2e::suite::Needs;
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "one_manager_serves_every_container",
            one_manager_serves_every_container,
        )
        .needs(&[Needs::SharedMode]),
        Case::new("killed_manager_leaks_nothing", killed_manager_leaks_nothing)
            .needs(&[Needs::SharedMode]),
        Case::new(
            "a_crash_takes_down_only_its_container",
            a_crash_takes_down_only_its_container,
        )
        .needs(&[Needs::SharedMode]),
        Case::new(
            "manager_logs_outlive_its_first_container",
            manager_logs_outlive_its_first_container,
        )
        .needs(&[Needs::SharedMode]),
        Case::new(
            "containerd_restart_keeps_tasks",
            containerd_restart_keeps_tasks,
        ),
        Case::new("a_killed_zygote_is_replaced", a_killed_zygote_is_replaced),
        Case::new(
            "simultaneous_first_starts_make_one_manager",
            simultaneous_first_starts_make_one_manager,
        )
        .needs(&[Needs::SharedMode]),
    ]
}

const SLEEPER: TestImage = TestImage::Probe(Target::WasiP1);
const WAIT: Duration = Duration::from_secs(20);

fn manager_binary(env: &Env) -> Result<String> {
    env.engine
        .manager_binary()
        .context("the engine under test is not in shared mode")
}

/// The one manager serving namespace `namespace`; fails unless there is exactly one.
fn the_manager(env: &Env, containerd: &Containerd, namespace: &str) -> Result<u32> {
    let managers = containerd.managers(&manager_binary(env)?, namespace);
    match managers.as_slice() {
        [pid] => Ok(*pid),
        _ => bail!(
            "expected exactly one manager for namespace {namespace}, found {managers:?}: {:?}",
            containerd.shim_processes()
        ),
    }
}

fn task_pid(containerd: &Containerd, namespace: &str, id: &str) -> Result<Option<(u32, String)>> {
    let listing = containerd.ctr_in(namespace, &["task", "ls"])?.ok()?;
    Ok(listing.stdout.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [task, pid, status] if *task == id => Some((pid.parse().ok()?, status.to_string())),
            _ => None,
        }
    }))
}

fn wait_for_task(
    containerd: &Containerd,
    namespace: &str,
    id: &str,
    done: impl Fn(Option<&(u32, String)>) -> bool,
) -> Result<Option<(u32, String)>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let task = task_pid(containerd, namespace, id)?;
        if done(task.as_ref()) {
            return Ok(task);
        }
        if Instant::now() > deadline {
            bail!("task {id} in {namespace}: still {task:?} after {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn running(task: Option<&(u32, String)>) -> bool {
    task.is_some_and(|(_, status)| status == "RUNNING")
}

/// Every container of a namespace is served by one manager, the parent of their processes.
fn one_manager_serves_every_container(env: &Env) -> Result<()> {
    let tasks = (0..3)
        .map(|_| env.start_attached(SLEEPER, &["/probe.wasm", "sleep"]))
        .collect::<Result<Vec<_>>>()?;
    let manager = the_manager(env, &env.containerd, &env.containerd.namespace)?;
    for task in &tasks {
        let (pid, _) = task_pid(&env.containerd, &env.containerd.namespace, &task.id)?
            .with_context(|| format!("task {} is not listed", task.id))?;
        ensure!(
            parent_of(pid) == Some(manager),
            "task {} (pid {pid}) is a child of {:?}, not of the manager {manager}",
            task.id,
            parent_of(pid)
        );
    }
    for task in tasks {
        task.kill_and_remove(env, WAIT)?;
    }
    Ok(())
}

/// The threads of a manager that serves nothing: main, the runtime's worker, the reaper, the
/// events sender, and room for the odd pooled thread.
const MANAGER_THREADS: usize = 6;

/// The `comm` of the zygote a shim or manager runs its container operations in
/// (`wasmrunner_shim::container::ZYGOTE_NAME`), and of its spare.
const ZYGOTE: &str = "wr-zygote";
const ZYGOTE_SPARE: &str = "wr-zygote-spare";

/// The live (not zombie) children of `parent` whose `comm` is `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let comm = head.split_once('(').map_or("", |(_, comm)| comm);
            let mut fields = tail.split_whitespace();
            let state = fields.next();
            let ppid = fields.next().and_then(|p| p.parse::<u32>().ok());
            comm == name && state != Some("Z") && ppid == Some(parent)
        })
        .collect()
}

/// kill -9 of the zygote while a container runs (issue #14): the container keeps running
/// and can still be signalled, new containers start, and the shim (or manager) has a
/// zygote and a spare again. Twice, so that the spare that took over is replaced too.
fn a_killed_zygote_is_replaced(env: &Env) -> Result<()> {
    let sleeper = env.start_attached(SLEEPER, &["/probe.wasm", "sleep"])?;
    let serving = parent_of(env.task_pid(&sleeper.id)?).context("the task has no parent")?;
    for round in 1..=2 {
        let zygotes = children_named(serving, ZYGOTE);
        let [zygote] = zygotes.as_slice() else {
            bail!("round {round}: expected one {ZYGOTE} under {serving}, found {zygotes:?}");
        };
        // SAFETY: kill(2) with a pid this test found as the shim's zygote child.
        ensure!(
            unsafe { libc::kill(*zygote as i32, libc::SIGKILL) } == 0,
            "round {round}: cannot kill the zygote {zygote}"
        );
        let deadline = Instant::now() + WAIT;
        while children_named(serving, ZYGOTE).contains(zygote) {
            ensure!(Instant::now() < deadline, "the zygote {zygote} did not die");
            std::thread::sleep(Duration::from_millis(20));
        }
        // An operation that needs the zygote: a harmless signal to the running container.
        env.containerd
            .ctr(&["task", "kill", "--signal", "SIGCONT", &sleeper.id])?
            .ok()
            .with_context(|| format!("round {round}: signalling the running container"))?;
        if env.engine.mode == wasmrunner_e2e::engine::Mode::Shared {
            env.run_rm(TestImage::Hello(Target::WasiP1, Flavour::Image), &[])?
                .ok()?
                .expect_output(HELLO)
                .with_context(|| format!("round {round}: a new container"))?;
        }
        ensure!(
            env.task_status(&sleeper.id)?.as_deref() == Some("RUNNING"),
            "round {round}: the running container did not survive its zygote"
        );
        let (zygotes, spares) = (
            children_named(serving, ZYGOTE),
            children_named(serving, ZYGOTE_SPARE),
        );
        ensure!(
            zygotes.len() == 1 && !zygotes.contains(zygote) && spares.len() == 1,
            "round {round}: expected a new zygote and a spare under {serving}, found {zygotes:?} and {spares:?}"
        );
    }
    sleeper.kill_and_remove(env, WAIT)
}

/// 20 `ctr run --rm` at the same moment in a namespace with no manager: every one prints
/// its hello and exactly one manager serves them. Then again once that manager has exited
/// as idle, over a stale socket left where the manager's goes (as a manager killed with
/// SIGKILL leaves it): every start then finds the socket dead, and without one start at a
/// time they removed it under each other ("remove socket: not found").
fn simultaneous_first_starts_make_one_manager(env: &Env) -> Result<()> {
    let containerd = &env.containerd;
    let namespace = format!("{}-burst-{}", containerd.namespace, env.engine.label());
    let hello = TestImage::Hello(Target::WasiP1, Flavour::Image);
    env.import_into(&namespace, hello)?.ok()?;
    let binary = manager_binary(env)?;
    for round in ["first", "over a stale socket"] {
        let deadline = Instant::now() + WAIT;
        while !containerd.managers(&binary, &namespace).is_empty() {
            ensure!(
                Instant::now() < deadline,
                "the manager did not exit as idle"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        if round == "over a stale socket" {
            // A manager that exits as idle takes its socket with it.
            let socket = manager_socket(env, &namespace);
            ensure!(
                !socket.exists(),
                "the manager exited as idle but left its socket {}",
                socket.display()
            );
            leave_a_stale_manager_socket(env, &namespace)?;
        }
        let starts = (0..20)
            .map(|_| {
                let id = env.container_id("burst");
                let mut command = containerd.ctr_command_in(&namespace);
                command
                    .args(["run", "--rm", "--runtime", &env.engine.runtime()])
                    .args([hello.name(), id])
                    .stdin(std::process::Stdio::null());
                command
            })
            .collect::<Vec<_>>();
        let outcomes: Vec<Result<_>> = std::thread::scope(|scope| {
            let runs: Vec<_> = starts
                .into_iter()
                .map(|mut command| scope.spawn(move || run_command_within(&mut command, WAIT * 3)))
                .collect();
            runs.into_iter()
                .map(|run| {
                    run.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked")))
                })
                .collect()
        });
        let failed: Vec<String> = outcomes
            .into_iter()
            .filter_map(|outcome| match outcome {
                Ok(out) if out.success() && out.stdout.contains(HELLO) => None,
                Ok(out) => Some(out.to_string()),
                Err(err) => Some(format!("{err:#}")),
            })
            .collect();
        ensure!(
            failed.is_empty(),
            "{round} burst: {} of 20 runs failed: {failed:#?}",
            failed.len()
        );
        let managers = containerd.managers(&binary, &namespace);
        ensure!(
            managers.len() == 1,
            "{round} burst: expected one manager, found {managers:?}"
        );
    }
    for failure in remove_cgroup(&format!("/{namespace}")) {
        eprintln!("{failure}");
    }
    Ok(())
}

/// Where the manager of `namespace` serves.
fn manager_socket(env: &Env, namespace: &str) -> std::path::PathBuf {
    let grouping = format!("wasmrunner-{}-manager", env.engine.name);
    env.containerd.shim_socket(namespace, &grouping)
}

/// Binds and closes a unix socket where the manager's of `namespace` goes.
fn leave_a_stale_manager_socket(env: &Env, namespace: &str) -> Result<()> {
    let socket = manager_socket(env, namespace);
    std::fs::create_dir_all("/run/containerd/s")?;
    let _ = std::fs::remove_file(&socket);
    drop(std::os::unix::net::UnixListener::bind(&socket)?);
    ensure!(socket.exists(), "no stale socket at {}", socket.display());
    Ok(())
}

/// SIGKILL the manager while containers run: containerd sees the tasks exit, deleting them
/// leaves nothing, and the next container starts a fresh manager. In a namespace of its own,
/// so the other cases keep their manager (and this one's threads are for its containers).
fn killed_manager_leaks_nothing(env: &Env) -> Result<()> {
    let containerd = &env.containerd;
    let namespace = format!("{}-kill-{}", containerd.namespace, env.engine.label());
    for image in [SLEEPER, TestImage::Hello(Target::WasiP1, Flavour::Image)] {
        env.import_into(&namespace, image)?.ok()?;
    }
    let ids: Vec<String> = (0..2).map(|_| env.container_id("victim")).collect();
    for id in &ids {
        containerd
            .ctr_in(
                &namespace,
                &[
                    "run",
                    "-d",
                    "--runtime",
                    &env.engine.runtime(),
                    &SLEEPER.name(),
                    id,
                    "/probe.wasm",
                    "sleep",
                ],
            )?
            .ok()?;
        wait_for_task(containerd, &namespace, id, running)?;
    }
    let manager = the_manager(env, containerd, &namespace)?;
    // Serving a container costs the manager no thread of its own but its OOM watch: the
    // connection containerd keeps to each task, and the Wait it holds open there, live on
    // the manager's runtime, and the threads that ran the Create and Start end when idle.
    let limit = MANAGER_THREADS + ids.len();
    let settled = procs::poll(Duration::from_secs(15), || {
        procs::threads(manager).filter(|&threads| threads <= limit)
    });
    ensure!(
        settled.is_some(),
        "the manager serving {} containers still has {:?} threads after 15 s, more than {limit}",
        ids.len(),
        procs::threads(manager)
    );
    // SAFETY: `kill` has no memory-safety preconditions.
    unsafe {
        libc::kill(manager as libc::pid_t, libc::SIGKILL);
    }
    for id in &ids {
        wait_for_task(containerd, &namespace, id, |task| !running(task))?;
        // containerd may have removed the task itself; the container record stays.
        let _ = containerd.ctr_in(&namespace, &["task", "delete", id]);
        containerd
            .ctr_in(&namespace, &["containers", "delete", id])?
            .ok()?;
        let mut trace = Trace::new(id, &namespace);
        trace.containerd_dirs = containerd.dirs();
        // The `shim delete` containerd runs for the task removes the socket nothing serves.
        trace.paths.push(manager_socket(env, &namespace));
        assert_clean(&trace).with_context(|| format!("after killing manager {manager}"))?;
    }
    let fresh = env.container_id("after");
    let out = containerd
        .ctr_in(
            &namespace,
            &[
                "run",
                "--rm",
                "--runtime",
                &env.engine.runtime(),
                &TestImage::Hello(Target::WasiP1, Flavour::Image).name(),
                &fresh,
            ],
        )?
        .ok()?;
    ensure!(
        out.stdout.contains(HELLO),
        "no hello from a fresh manager: {out}"
    );
    let managers = containerd.managers(&manager_binary(env)?, &namespace);
    ensure!(
        !managers.contains(&manager),
        "the killed manager {manager} is still listed: {managers:?}"
    );
    for failure in remove_cgroup(&format!("/{namespace}")) {
        eprintln!("{failure}");
    }
    Ok(())
}

/// A manager outlives the container that started it, whose log fifo containerd closes on
/// delete; with containerd (and so the shims) at debug level, the manager's next log line
/// used to hit that closed fifo: SIGPIPE, logged, another SIGPIPE, for ever, and no child
/// reaped again (the next Create hung). Containers after the first still run, and the
/// manager's log still reaches containerd's, through the fifos of later tasks. In a namespace
/// of its own, so that this case's first container is the manager's first.
fn manager_logs_outlive_its_first_container(env: &Env) -> Result<()> {
    let containerd = &env.containerd;
    let namespace = format!("{}-log-{}", containerd.namespace, env.engine.label());
    let hello = TestImage::Hello(Target::WasiP1, Flavour::Image);
    env.import_into(&namespace, hello)?.ok()?;
    let ids: Vec<String> = (0..3).map(|_| env.container_id("logs")).collect();
    for id in &ids {
        let mut command = containerd.ctr_command_in(&namespace);
        command.args([
            "run",
            "--rm",
            "--runtime",
            &env.engine.runtime(),
            &hello.name(),
            id,
        ]);
        let out = run_command_within(&mut command, WAIT)?;
        ensure!(
            out.success() && out.stdout.contains(HELLO),
            "container {id} of a manager whose first container is gone did not run: {out}\n{}",
            containerd.log_tail()
        );
    }
    let last = ids.last().context("three ids")?;
    ensure!(
        containerd.log_mentions(&format!("creating task {last}")),
        "the manager's log of {last} never reached containerd's log\n{}",
        containerd.log_tail()
    );
    let managers = containerd.managers(&manager_binary(env)?, &namespace);
    for pid in managers {
        let busy = cpu_seconds(pid).unwrap_or(0.0);
        ensure!(
            busy < 5.0,
            "manager {pid} has used {busy:.1} s of CPU for three hello containers"
        );
    }
    for failure in remove_cgroup(&format!("/{namespace}")) {
        eprintln!("{failure}");
    }
    Ok(())
}

/// CPU time (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_second.max(1) as f64)
}

/// A workload that exhausts its memory ends alone: its neighbour and the manager live on.
fn a_crash_takes_down_only_its_container(env: &Env) -> Result<()> {
    let neighbour = env.start_attached(SLEEPER, &["/probe.wasm", "sleep"])?;
    let manager = the_manager(env, &env.containerd, &env.containerd.namespace)?;
    let crash = env.run_rm_with(
        SLEEPER,
        &["--memory-limit", &(48u64 << 20).to_string()],
        &["/probe.wasm", "grow"],
    )?;
    ensure!(
        matches!(crash.status, Some(status) if status != 0),
        "the module that exhausts its memory did not fail: {crash}"
    );
    ensure!(
        env.task_status(&neighbour.id)?.as_deref() == Some("RUNNING"),
        "the neighbour stopped when another container crashed"
    );
    let after = the_manager(env, &env.containerd, &env.containerd.namespace)?;
    ensure!(
        after == manager,
        "the manager changed from {manager} to {after}"
    );
    neighbour.kill_and_remove(env, WAIT)
}

/// containerd restarts while a task runs: the task keeps running (same process) and is
/// reachable again (listed, signalled, its exit seen). On a containerd of its own.
fn containerd_restart_keeps_tasks(env: &Env) -> Result<()> {
    env.with_own_containerd("restart", |containerd| restart_case(env, containerd))
}

fn restart_case(env: &Env, containerd: &mut Containerd) -> Result<()> {
    let namespace = containerd.namespace.clone();
    let archive = containerd.root().join("probe.tar");
    wasmrunner_oci::write_archive(&SLEEPER.spec()?, &archive)?;
    containerd
        .ctr(&["image", "import", &archive.to_string_lossy()])?
        .ok()?;
    let id = env.container_id("restart");
    containerd
        .ctr(&[
            "run",
            "-d",
            "--runtime",
            &env.engine.runtime(),
            &SLEEPER.name(),
            &id,
            "/probe.wasm",
            "sleep",
        ])?
        .ok()?;
    let (pid, _) =
        wait_for_task(containerd, &namespace, &id, running)?.context("the task vanished")?;
    containerd.restart()?;
    let (after, _) = wait_for_task(containerd, &namespace, &id, running)?
        .context("the task is gone after containerd restarted")?;
    ensure!(
        after == pid,
        "the task's process changed from {pid} to {after}"
    );
    ensure!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the task's process {pid} died with containerd"
    );
    containerd
        .ctr(&["task", "kill", "--signal", "SIGKILL", &id])?
        .ok()?;
    wait_for_task(containerd, &namespace, &id, |task| {
        task.is_some_and(|(_, status)| status == "STOPPED")
    })?;
    containerd.ctr(&["task", "delete", &id])?;
    containerd.ctr(&["containers", "delete", &id])?.ok()?;
    let mut trace = Trace::new(&id, &namespace);
    trace.containerd_dirs = containerd.dirs();
    trace.manager = env.engine.manager_binary();
    assert_clean(&trace)
}
