//! A long-running module is listed, measured and stopped with signals.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use containerd_shim_protos::shim::shim::StartRequest;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::ttrpc;
use wasmrunner_e2e::containerd::DaemonEnv;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::TestImage;
use wasmrunner_e2e::procs;
use wasmrunner_e2e::suite::delete_container;
use wasmrunner_e2e::{Case, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "sigterm_stops_a_running_module",
            sigterm_stops_a_running_module,
        ),
        Case::new(
            "sigkill_stops_a_running_module",
            sigkill_stops_a_running_module,
        ),
        Case::new("task_ls_and_metrics", task_ls_and_metrics),
        Case::new(
            "starting_a_running_task_is_refused",
            starting_a_running_task_is_refused,
        ),
        Case::new("an_idle_shim_sleeps", an_idle_shim_sleeps),
    ]
}

/// At most this many wake-ups in [`IDLE_WINDOW`] of a shim whose one container sleeps (a
/// stray one is allowed; containerd-shim's event client alone made 200, one per 10 ms).
const IDLE_WAKEUPS: f64 = 5.0;
const IDLE_WINDOW: Duration = Duration::from_secs(2);

/// A running container whose module sleeps costs the node no CPU: its serving process (the
/// manager in shared mode, with a containerd of its own so no other case's tasks are
/// there), the zygote and its spare do not wake up.
fn an_idle_shim_sleeps(env: &Env) -> Result<()> {
    env.with_own_env("idle", DaemonEnv::new(), |env| {
        let task =
            env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "sleep"])?;
        let measured = idle_wakeups(env, &task.id);
        task.kill_and_remove(env, Duration::from_secs(20))?;
        let (server, rate) = measured?;
        ensure!(
            rate * IDLE_WINDOW.as_secs_f64() <= IDLE_WAKEUPS,
            "the shim {server} and its zygotes woke up {rate:.1} times a second while its \
             container slept"
        );
        Ok(())
    })
}

/// The serving process of task `id` and how often per second it and its zygotes (not the
/// container) woke up over [`IDLE_WINDOW`].
fn idle_wakeups(env: &Env, id: &str) -> Result<(u32, f64)> {
    let init = env.task_pid(id)?;
    let server = procs::Process::of(init)
        .with_context(|| format!("task {id}'s process {init} is gone"))?
        .parent;
    // Let the Start's replies and events settle.
    std::thread::sleep(Duration::from_millis(500));
    let mut watched = vec![server];
    watched.extend(
        procs::children(server)
            .into_iter()
            .map(|child| child.pid)
            .filter(|&pid| pid != init),
    );
    Ok((server, procs::wakeups_per_second(&watched, IDLE_WINDOW)))
}

/// A second Start of a running task is refused as a failed precondition (not an internal
/// error), and the task keeps running.
fn starting_a_running_task_is_refused(env: &Env) -> Result<()> {
    let task = env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "sleep"])?;
    let again = start_again(env, &task.id);
    let still = env.task_status(&task.id);
    task.kill_and_remove(env, Duration::from_secs(20))?;
    let refusal = match again? {
        Ok(()) => anyhow::bail!("a second Start of a running task succeeded"),
        Err(refusal) => refusal,
    };
    ensure!(
        refusal.code() == ttrpc::Code::FAILED_PRECONDITION
            && refusal.message().contains("was started already"),
        "a second Start was refused with {:?}: {}",
        refusal.code(),
        refusal.message()
    );
    ensure!(
        still?.as_deref() == Some("RUNNING"),
        "the task stopped running after a second start"
    );
    Ok(())
}

/// Sends Start for task `id` straight to the shim serving it (ctr would create a task
/// again): `Ok(Err(status))` is the shim's refusal.
fn start_again(env: &Env, id: &str) -> Result<std::result::Result<(), ttrpc::Status>> {
    let address = std::fs::read_to_string(env.bundle_of(id).join("address"))
        .context("reading the shim's address from the bundle")?;
    let client = ttrpc::Client::connect(address.trim())
        .with_context(|| format!("connecting to the shim at {address}"))?;
    let request = StartRequest {
        id: id.to_string(),
        ..Default::default()
    };
    match TaskClient::new(client).start(ttrpc::context::with_timeout(10_000_000_000), &request) {
        Ok(_) => Ok(Ok(())),
        Err(ttrpc::Error::RpcStatus(status)) => Ok(Err(status)),
        Err(err) => Err(anyhow::anyhow!("calling Start: {err}")),
    }
}

fn stop_with(env: &Env, signal: &str, expected_status: i32) -> Result<()> {
    let task = env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "sleep"])?;
    let id = task.id.clone();
    env.containerd
        .ctr(&["task", "kill", "--signal", signal, &id])?
        .ok()?;
    let out = task.wait(Duration::from_secs(20))?;
    ensure!(
        out.status == Some(expected_status),
        "expected `ctr run` to end with {expected_status} after {signal}: {out}"
    );
    ensure!(out.stdout.contains("ready"), "the module never ran: {out}");
    delete_container(env, &id)?;
    env.assert_clean(&id)
}

fn sigterm_stops_a_running_module(env: &Env) -> Result<()> {
    stop_with(env, "SIGTERM", 143)
}

fn sigkill_stops_a_running_module(env: &Env) -> Result<()> {
    stop_with(env, "SIGKILL", 137)
}

fn task_ls_and_metrics(env: &Env) -> Result<()> {
    let task = env.start_attached(TestImage::Probe(Target::WasiP1), &["/probe.wasm", "spin"])?;
    let id = task.id.clone();
    let listing = env.containerd.ctr(&["task", "ls"])?.ok()?;
    let row = listing
        .stdout
        .lines()
        .find(|line| line.split_whitespace().next() == Some(id.as_str()))
        .with_context(|| format!("{id} missing from `ctr task ls`: {listing}"))?;
    let pid: u32 = row
        .split_whitespace()
        .nth(1)
        .and_then(|pid| pid.parse().ok())
        .with_context(|| format!("no pid in {row:?}"))?;
    ensure!(pid > 0, "task pid is 0: {row:?}");
    ensure!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "task pid {pid} is not a live process"
    );

    // Let the module burn some CPU so the counters move.
    std::thread::sleep(Duration::from_millis(300));
    let metrics = env.containerd.ctr(&["task", "metrics", &id])?.ok()?;
    let value = |name: &str| -> Option<u64> {
        metrics.stdout.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(name)).then(|| words.next()?.parse().ok())?
        })
    };
    let memory = value("memory.usage_in_bytes").or_else(|| value("memory.usage"));
    ensure!(
        memory.is_some_and(|m| m > 0),
        "no memory usage in metrics: {metrics}"
    );
    // CPU usage is not asserted here: runwasi's task service reads it from the cgroup v2
    // `cpu.stat` file only, so on cgroup v1 hosts (like this one) it reports 0. The CRI
    // suite's stats cases cover CPU against wasmrunner's own task service.
    let pids = value("pids.current");
    ensure!(
        pids.is_some_and(|p| p >= 1),
        "no pid count in metrics: {metrics}"
    );

    task.kill_and_remove(env, Duration::from_secs(20))
}
