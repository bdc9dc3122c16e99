//! Kubernetes: pods whose RuntimeClass handler is the engine's (`wasmtime`), through CRI, with
//! kubelet's calls in kubelet's order (see `wasmrunner_e2e::cri`); `runc` pods as the baseline
//! where a result depends on more than the shim.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::{ContainerStatus, CpuUsage, MemoryUsage, NamespaceMode, PodSandboxStats};
use wasmrunner_e2e::cri::config::CNI_BIN_DIR;
use wasmrunner_e2e::cri::pod::netns_of;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec, RUNC_HANDLER};
use wasmrunner_e2e::engine::Engine;
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{HELLO, TestImage};
use wasmrunner_e2e::{Case, Env};
use wasmrunner_oci::Flavour;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("runtime_handlers_registered", runtime_handlers_registered),
        Case::new("hello_pod", hello_pod),
        Case::new("log_survives_a_rebuild", log_survives_a_rebuild),
        Case::new("wasm_and_native_sidecar", wasm_and_native_sidecar),
        Case::new("two_wasm_containers", two_wasm_containers),
        Case::new("oom_killed", oom_killed),
        Case::new("restart_same_name", restart_same_name),
        Case::new("host_network", host_network),
        Case::new("pod_network", pod_network),
        Case::new("stats_of_a_busy_module", stats_of_a_busy_module),
        Case::new("runc_baseline_oom_killed", runc_baseline_oom_killed),
        Case::new("runc_baseline_stats", runc_baseline_stats),
        Case::new("lifecycle_timing", lifecycle_timing),
    ]
}

const HELLO_WASM: TestImage = TestImage::Hello(Target::WasiP1, Flavour::Image);
const HELLO_NATIVE: TestImage = TestImage::Hello(Target::Native, Flavour::Image);
const PROBE_WASM: TestImage = TestImage::Probe(Target::WasiP1);
const PROBE_NATIVE: TestImage = TestImage::Probe(Target::Native);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

/// The RuntimeClass handler of the engine and mode under test (`wasmtime`, `wasmtime-shared`).
fn handler(env: &Env) -> String {
    env.engine.handler()
}

fn expect_exit(status: &ContainerStatus, code: i32, reason: &str) -> Result<()> {
    ensure!(
        status.exit_code == code && status.reason == reason,
        "container {} ended with exit code {} reason {:?} (message {:?}), expected {code} {reason:?}",
        status
            .metadata
            .as_ref()
            .map(|m| m.name.as_str())
            .unwrap_or("?"),
        status.exit_code,
        status.reason,
        status.message
    );
    Ok(())
}

/// The handlers the installer wrote are what CRI runs with, and CRI is ready.
fn runtime_handlers_registered(env: &Env) -> Result<()> {
    let client = env.cri_client()?;
    let version = client.version()?;
    ensure!(
        version.runtime_name == "containerd" && version.runtime_api_version == "v1",
        "unexpected CRI version: {version:?}"
    );
    let status = client.status(true)?;
    let conditions = status
        .status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default();
    for condition in ["RuntimeReady", "NetworkReady"] {
        ensure!(
            conditions.iter().any(|c| c.r#type == condition && c.status),
            "CRI condition {condition} is not true: {conditions:?}"
        );
    }
    let config = status
        .info
        .get("config")
        .context("no config in the verbose CRI Status")?;
    let config: serde_json::Value =
        serde_json::from_str(config).context("the verbose CRI Status's config is not JSON")?;
    let wasm_handler = handler(env);
    for (name, runtime_type) in [
        (wasm_handler.as_str(), env.engine.runtime()),
        (RUNC_HANDLER, "io.containerd.runc.v2".to_string()),
    ] {
        let found = find_key(&config, name)
            .and_then(|r| r.get("runtimeType"))
            .and_then(|t| t.as_str());
        ensure!(
            found == Some(runtime_type.as_str()),
            "CRI's runtime {name} has runtimeType {found:?}, expected {runtime_type}: {config}"
        );
    }
    ensure!(
        env.containerd
            .installer_actions
            .iter()
            .any(|a| a.contains(&format!("runtime `{}`", handler(env)))),
        "the installer did not report adding {}: {:?}",
        handler(env),
        env.containerd.installer_actions
    );
    Ok(())
}

/// The first value under key `key` anywhere in `value`.
fn find_key<'v>(value: &'v serde_json::Value, key: &str) -> Option<&'v serde_json::Value> {
    match value {
        serde_json::Value::Object(map) => map
            .get(key)
            .or_else(|| map.values().find_map(|v| find_key(v, key))),
        serde_json::Value::Array(items) => items.iter().find_map(|v| find_key(v, key)),
        _ => None,
    }
}

/// One wasm container: hello in its CRI log, exit code 0, reason Completed.
fn hello_pod(env: &Env) -> Result<()> {
    let mut pod = Pod::run(env, PodSpec::new("hello", &handler(env), Network::Host))?;
    let id = pod.run_container(&ContainerSpec::new("hello", HELLO_WASM, &[]))?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    expect_exit(&status, 0, "Completed")?;
    let lines = pod.wait_for_stdout("hello", 0, HELLO, LOG_TIMEOUT)?;
    ensure!(
        lines == [HELLO],
        "unexpected stdout in the CRI log: {lines:?}"
    );
    let log = pod.log("hello", 0)?;
    ensure!(
        log.iter().all(|l| l.stream == "stdout"),
        "unexpected stderr in the CRI log: {log:?}"
    );
    ensure!(
        status.log_path == pod.log_path("hello", 0).to_string_lossy(),
        "ContainerStatus log_path {:?} is not {}",
        status.log_path,
        pod.log_path("hello", 0).display()
    );
    ensure!(
        status
            .metadata
            .as_ref()
            .map(|m| (m.name.as_str(), m.attempt))
            == Some(("hello", 0)),
        "unexpected metadata: {status:?}"
    );
    // containerd stamps `started_at` with its own clock once Start has returned, and
    // `finished_at` with the exit time the shim reports: a module that exits within a
    // millisecond of starting can finish "before" it started, under runc as well.
    const CLOCK_SLACK_NS: i64 = 50_000_000;
    ensure!(
        status.started_at > 0
            && status.finished_at >= status.created_at
            && status.finished_at + CLOCK_SLACK_NS >= status.started_at,
        "unexpected start and finish times: {status:?}"
    );
    pod.remove()?.assert_clean()
}

/// A container built twice (libcontainer's start-up race, injected) still has its output in
/// the CRI log, which is what `kubectl logs` reads.
fn log_survives_a_rebuild(env: &Env) -> Result<()> {
    let (key, value) = Engine::FAULT_STARTUP_RACE;
    let mut pod = Pod::run(env, PodSpec::new("rebuilt", &handler(env), Network::Host))?;
    let spec = ContainerSpec::new("hello", HELLO_WASM, &[]).env(key, value);
    let id = pod.run_container(&spec)?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    expect_exit(&status, 0, "Completed")?;
    let lines = pod.wait_for_stdout("hello", 0, HELLO, LOG_TIMEOUT)?;
    ensure!(
        lines == [HELLO],
        "unexpected stdout in the CRI log of the rebuilt container: {lines:?}"
    );
    if env.engine.logs_reach_containerd() {
        ensure!(
            env.containerd.log_mentions(&Engine::rebuild_log_line(&id)),
            "containerd's log shows no rebuild of {id}: the fault was not injected\n{}",
            env.containerd.log_tail()
        );
    }
    pod.remove()?.assert_clean()
}

/// A wasm container and a native sidecar (which ignores SIGTERM) in one pod: both log;
/// StopContainer stops the module with SIGTERM (143, well before the grace period ends) and
/// the sidecar with SIGKILL once its 2 s grace period is over (137).
fn wasm_and_native_sidecar(env: &Env) -> Result<()> {
    let mut pod = Pod::run(env, PodSpec::new("sidecar", &handler(env), Network::Host))?;
    let app = pod.run_container(&ContainerSpec::new("app", PROBE_WASM, &["sleep"]))?;
    let sidecar = pod.run_container(&ContainerSpec::new("sidecar", TestImage::IgnoreTerm, &[]))?;
    for (name, id) in [("app", &app), ("sidecar", &sidecar)] {
        pod.wait_for_stdout(name, 0, "ready", LOG_TIMEOUT)?;
        pod.wait_running(id, LOG_TIMEOUT)?;
    }

    let (took, status) = pod.stop_container(&app, 10)?;
    expect_exit(&status, 143, "Error")?;
    ensure!(
        took < Duration::from_secs(5),
        "stopping the module took {took:?}: SIGTERM did not stop it, the grace period ran out"
    );

    let (took, status) = pod.stop_container(&sidecar, 2)?;
    expect_exit(&status, 137, "Error")?;
    ensure!(
        took >= Duration::from_secs(2),
        "the sidecar ignores SIGTERM, yet StopContainer returned after {took:?}, before its 2 s grace period"
    );
    ensure!(
        took < Duration::from_secs(10),
        "StopContainer with a 2 s grace period took {took:?}"
    );
    for name in ["app", "sidecar"] {
        let lines = pod.wait_for_stdout(name, 0, "ready", LOG_TIMEOUT)?;
        ensure!(lines == ["ready"], "unexpected {name} log: {lines:?}");
    }
    pod.remove()?.assert_clean()
}

/// Two wasm containers in one pod, each with its own log; CRI's env reaches the module.
fn two_wasm_containers(env: &Env) -> Result<()> {
    let mut pod = Pod::run(env, PodSpec::new("two", &handler(env), Network::Host))?;
    let hello = pod.run_container(&ContainerSpec::new("hello", HELLO_WASM, &[]))?;
    let probe = pod.run_container(&ContainerSpec::new(
        "probe",
        PROBE_WASM,
        &["env", "POD_NAME"],
    ))?;
    for id in [&hello, &probe] {
        expect_exit(&pod.wait_exited(id, EXIT_TIMEOUT)?, 0, "Completed")?;
    }
    let lines = pod.wait_for_stdout("hello", 0, HELLO, LOG_TIMEOUT)?;
    ensure!(lines == [HELLO], "unexpected hello log: {lines:?}");
    let lines = pod.wait_for_stdout("probe", 0, "POD_NAME=two", LOG_TIMEOUT)?;
    ensure!(lines == ["POD_NAME=two"], "unexpected probe log: {lines:?}");
    pod.remove()?.assert_clean()
}

/// A memory limit on a container that keeps allocating; `annotations` on the container.
fn oom_case(
    env: &Env,
    handler: &str,
    image: TestImage,
    annotations: &[(&str, &str)],
) -> Result<()> {
    const LIMIT: i64 = 64 << 20;
    let mut pod = Pod::run(
        env,
        PodSpec::new("oom", handler, Network::Host).memory_limit(LIMIT),
    )?;
    let spec = annotations.iter().fold(
        ContainerSpec::new("grow", image, &["grow"]).memory_limit(LIMIT),
        |spec, (key, value)| spec.annotation(key, value),
    );
    let id = pod.run_container(&spec)?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    let lines: Vec<String> = pod
        .log("grow", 0)?
        .into_iter()
        .map(|l| format!("{} {}", l.stream, l.text))
        .collect();
    ensure!(
        lines.iter().any(|l| l == "stdout holding 16 MiB"),
        "the container never grew (exit code {}, reason {:?}); its log: {lines:?}",
        status.exit_code,
        status.reason
    );
    expect_exit(&status, 137, "OOMKilled").with_context(|| {
        format!(
            "{handler}: a container over its {} MiB memory limit; last log lines: {:?}",
            LIMIT >> 20,
            &lines[lines.len().saturating_sub(3)..]
        )
    })?;
    pod.remove()?.assert_clean()
}

/// A wasm container over its memory limit is OOMKilled (exit 137): the shim must publish
/// containerd's TaskOOM event for CRI to say so. By default the container's limit also caps
/// the guest's linear memory, so that growing fails inside the guest first (the
/// capabilities area checks that); here the policy lets the guest's memory grow to 1 GiB,
/// past the limit.
fn oom_killed(env: &Env) -> Result<()> {
    oom_case(
        env,
        &handler(env),
        PROBE_WASM,
        &[("wasmrunner.dev/memory", "1Gi")],
    )
}

/// The same under runc: what kubelet sees from a native container.
fn runc_baseline_oom_killed(env: &Env) -> Result<()> {
    oom_case(env, RUNC_HANDLER, PROBE_NATIVE, &[])
}

/// kubelet restarts a container that exited: a new container with the same name and
/// attempt 1 in the same sandbox, with its own log file; the exited one stays (for
/// `kubectl logs --previous`) until the pod goes.
fn restart_same_name(env: &Env) -> Result<()> {
    let mut pod = Pod::run(env, PodSpec::new("restart", &handler(env), Network::Host))?;
    let spec = ContainerSpec::new("app", HELLO_WASM, &[]);
    let mut ids = Vec::new();
    for attempt in 0..2 {
        let id = pod.create_container(&spec, attempt)?;
        pod.start_container(&id)?;
        let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
        expect_exit(&status, 0, "Completed")?;
        ensure!(
            status.metadata.as_ref().map(|m| m.attempt) == Some(attempt),
            "unexpected metadata for attempt {attempt}: {status:?}"
        );
        let lines = pod.wait_for_stdout("app", attempt, HELLO, LOG_TIMEOUT)?;
        ensure!(
            lines == [HELLO],
            "unexpected log of attempt {attempt}: {lines:?}"
        );
        ids.push(id);
    }
    ensure!(
        ids[0] != ids[1],
        "the restart reused container id {}",
        ids[0]
    );
    let previous = pod.status(&ids[0])?;
    expect_exit(&previous, 0, "Completed").context("the previous attempt after the restart")?;
    let lines = pod.wait_for_stdout("app", 0, HELLO, LOG_TIMEOUT)?;
    ensure!(lines == [HELLO], "attempt 0's log changed: {lines:?}");
    pod.remove()?.assert_clean()
}

/// A running module and a `cat /etc/hosts` module in `network`; returns the pod, the
/// running container's id and the hosts file the second one read.
fn network_pod<'e>(env: &'e Env, network: Network) -> Result<(Pod<'e>, String, Vec<String>)> {
    let mut pod = Pod::run(env, PodSpec::new("net", &handler(env), network))?;
    let app = pod.run_container(&ContainerSpec::new("app", PROBE_WASM, &["sleep"]))?;
    pod.wait_for_stdout("app", 0, "ready", LOG_TIMEOUT)?;
    pod.wait_running(&app, LOG_TIMEOUT)?;
    let hosts = pod.run_container(&ContainerSpec::new(
        "hosts",
        PROBE_WASM,
        &["cat", "/etc/hosts"],
    ))?;
    expect_exit(&pod.wait_exited(&hosts, EXIT_TIMEOUT)?, 0, "Completed")?;
    let deadline = Instant::now() + LOG_TIMEOUT;
    let lines = loop {
        let log = pod.log("hosts", 0)?;
        let lines = wasmrunner_e2e::cri::pod::stream_lines(&log, "stdout");
        if lines
            .first()
            .is_some_and(|l| l.starts_with("# Kubernetes-managed hosts file"))
            || Instant::now() > deadline
        {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok((pod, app, lines))
}

/// A host-network pod: the sandbox and the module share the node's network namespace, CRI
/// reports no pod IP (kubelet uses the node's), and the module reads kubelet's hosts file.
fn host_network(env: &Env) -> Result<()> {
    let (pod, app, hosts) = network_pod(env, Network::Host)?;
    let status = pod
        .sandbox_status(false)?
        .status
        .context("no PodSandboxStatus")?;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    ensure!(
        ip.is_empty(),
        "a host-network pod got a pod IP from CRI: {ip}"
    );
    let mode = status
        .linux
        .and_then(|l| l.namespaces)
        .and_then(|n| n.options)
        .map(|o| o.network);
    ensure!(
        mode == Some(NamespaceMode::Node as i32),
        "the sandbox's network namespace mode is {mode:?}, not NODE"
    );
    let node = netns_of(env.containerd.pid())?;
    let sandbox = netns_of(pod.sandbox_pid()?)?;
    let module = netns_of(pod.container_pid(&app)?)?;
    ensure!(
        sandbox == node && module == node,
        "host network: node {node}, sandbox {sandbox}, module {module}"
    );
    ensure!(
        hosts.first().map(String::as_str)
            == Some("# Kubernetes-managed hosts file (host network)."),
        "the module did not read kubelet's hosts file: {hosts:?}"
    );
    let (_, status) = pod.stop_container(&app, 10)?;
    expect_exit(&status, 143, "Error")?;
    pod.remove()?.assert_clean()
}

/// A pod on the CNI bridge: an IP from the run's subnet, a network namespace of its own that
/// the module joins, and a hosts file naming the pod's IP.
fn pod_network(env: &Env) -> Result<()> {
    let plugin = std::path::Path::new(CNI_BIN_DIR).join("bridge");
    ensure!(
        plugin.is_file(),
        "{} is missing: install Debian's containernetworking-plugins (scripts/setup-debian.sh)",
        plugin.display()
    );
    let (pod, app, hosts) = network_pod(env, Network::Pod)?;
    let status = pod
        .sandbox_status(false)?
        .status
        .context("no PodSandboxStatus")?;
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    let cri = &env.containerd.cri;
    ensure!(
        cri.in_subnet(&ip),
        "the pod's IP {ip:?} is not in the bridge network's subnet {}",
        cri.subnet()
    );
    ensure!(
        pod.netns.is_some(),
        "no network namespace path in the verbose PodSandboxStatus"
    );
    let node = netns_of(env.containerd.pid())?;
    let sandbox = netns_of(pod.sandbox_pid()?)?;
    let module = netns_of(pod.container_pid(&app)?)?;
    ensure!(
        sandbox != node && module == sandbox,
        "pod network: node {node}, sandbox {sandbox}, module {module}"
    );
    let entry = format!("{ip}\tnet");
    ensure!(
        hosts.contains(&entry),
        "the module's /etc/hosts lacks {entry:?}: {hosts:?}"
    );
    let (_, status) = pod.stop_container(&app, 10)?;
    expect_exit(&status, 143, "Error")?;
    pod.remove()?.assert_clean()
}

fn memory_working_set(memory: Option<&MemoryUsage>) -> u64 {
    memory
        .and_then(|m| m.working_set_bytes.as_ref())
        .map_or(0, |v| v.value)
}

fn cpu_nanoseconds(cpu: Option<&CpuUsage>) -> u64 {
    cpu.and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map_or(0, |v| v.value)
}

/// What `kubectl top` reads for a busy container: ContainerStats and PodSandboxStats must
/// report a memory working set and CPU time. All readings are reported together.
fn stats_case(env: &Env, handler: &str, image: TestImage) -> Result<()> {
    let mut pod = Pod::run(env, PodSpec::new("busy", handler, Network::Host))?;
    let id = pod.run_container(&ContainerSpec::new("spin", image, &["spin"]))?;
    pod.wait_for_stdout("spin", 0, "ready", LOG_TIMEOUT)?;
    pod.wait_running(&id, LOG_TIMEOUT)?;
    // Let it burn CPU for a while.
    std::thread::sleep(Duration::from_secs(1));

    let mut problems = Vec::new();
    let mut readings = Vec::new();
    match pod.client().container_stats(&id) {
        Ok(stats) => {
            let memory = memory_working_set(stats.memory.as_ref());
            let cpu = cpu_nanoseconds(stats.cpu.as_ref());
            readings.push(format!(
                "ContainerStats: working set {memory} B, CPU {cpu} ns"
            ));
            if memory == 0 {
                problems.push(format!(
                    "ContainerStats: memory working set is 0 ({:?})",
                    stats.memory
                ));
            }
            if cpu == 0 {
                problems.push(format!(
                    "ContainerStats: CPU usage_core_nano_seconds is 0 after 1 s of spinning ({:?})",
                    stats.cpu
                ));
            }
        }
        Err(e) => problems.push(format!("{e:#}")),
    }
    match pod.client().pod_sandbox_stats(&pod.id) {
        Ok(stats) => pod_stats_problems(&stats, &id, &mut problems, &mut readings),
        Err(e) => problems.push(format!("{e:#}")),
    }
    println!("{handler} stats after 1 s of spin: {}", readings.join("; "));

    // A native spinner ignores SIGTERM as PID 1: a short grace period.
    pod.stop_container(&id, 2)?;
    pod.remove()?.assert_clean()?;
    if !problems.is_empty() {
        bail!("{handler}: {}", problems.join("\n"));
    }
    Ok(())
}

/// PodSandboxStats must sum the pod's usage and list the container with its own.
fn pod_stats_problems(
    stats: &PodSandboxStats,
    id: &str,
    problems: &mut Vec<String>,
    readings: &mut Vec<String>,
) {
    let Some(linux) = stats.linux.as_ref() else {
        problems.push("PodSandboxStats has no Linux stats".to_string());
        return;
    };
    let memory = memory_working_set(linux.memory.as_ref());
    let cpu = cpu_nanoseconds(linux.cpu.as_ref());
    readings.push(format!(
        "PodSandboxStats: working set {memory} B, CPU {cpu} ns"
    ));
    if memory == 0 {
        problems.push(format!(
            "PodSandboxStats: memory working set is 0 ({:?})",
            linux.memory
        ));
    }
    if cpu == 0 {
        problems.push(format!(
            "PodSandboxStats: CPU usage_core_nano_seconds is 0 ({:?})",
            linux.cpu
        ));
    }
    let listed = linux
        .containers
        .iter()
        .find(|c| c.attributes.as_ref().map(|a| a.id.as_str()) == Some(id));
    match listed {
        None => problems.push(format!(
            "PodSandboxStats does not list container {id}: {:?}",
            linux.containers
        )),
        Some(c) if cpu_nanoseconds(c.cpu.as_ref()) == 0 => {
            problems.push("PodSandboxStats: the container's own CPU usage is 0".to_string())
        }
        Some(_) => {}
    }
}

fn stats_of_a_busy_module(env: &Env) -> Result<()> {
    stats_case(env, &handler(env), PROBE_WASM)
}

fn runc_baseline_stats(env: &Env) -> Result<()> {
    stats_case(env, RUNC_HANDLER, PROBE_NATIVE)
}

/// One pod lifecycle, RunPodSandbox to RemovePodSandbox, for a hello container: its wall
/// time (the leak check after it is not counted).
fn one_lifecycle(env: &Env, handler: &str, image: TestImage) -> Result<Duration> {
    let start = Instant::now();
    let mut pod = Pod::run(env, PodSpec::new("timing", handler, Network::Host))?;
    let id = pod.run_container(&ContainerSpec::new("hello", image, &[]))?;
    expect_exit(&pod.wait_exited(&id, EXIT_TIMEOUT)?, 0, "Completed")?;
    pod.wait_for_stdout("hello", 0, HELLO, LOG_TIMEOUT)?;
    let removed = pod.remove()?;
    let took = start.elapsed();
    removed.assert_clean()?;
    Ok(took)
}

fn median(mut runs: Vec<Duration>) -> Duration {
    runs.sort();
    runs.get(runs.len() / 2).copied().unwrap_or_default()
}

fn seconds(runs: &[Duration]) -> String {
    runs.iter()
        .map(|d| format!("{:.3}", d.as_secs_f64()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The median wall time of 5 pod lifecycles (host network, one hello container) on the
/// engine's handler and on runc, printed for the record; asserts only that each succeeds.
/// Other cases run at the same time unless this one is run alone (`-- cri::lifecycle_timing`).
fn lifecycle_timing(env: &Env) -> Result<()> {
    const RUNS: usize = 5;
    let wasm_handler = handler(env).to_string();
    let subjects = [
        (wasm_handler.as_str(), HELLO_WASM),
        (RUNC_HANDLER, HELLO_NATIVE),
    ];
    // A first, untimed run of each imports the images.
    for (handler, image) in subjects {
        one_lifecycle(env, handler, image).with_context(|| format!("warm-up on {handler}"))?;
    }
    let mut runs: Vec<Vec<Duration>> = vec![Vec::new(); subjects.len()];
    for _ in 0..RUNS {
        for (i, (handler, image)) in subjects.iter().enumerate() {
            runs[i].push(one_lifecycle(env, handler, *image)?);
        }
    }
    for ((handler, _), runs) in subjects.iter().zip(runs) {
        println!(
            "cri lifecycle timing, containerd {}: {handler}: median {:.3} s of {RUNS} runs ({} s)",
            env.containerd.version,
            median(runs.clone()).as_secs_f64(),
            seconds(&runs)
        );
    }
    Ok(())
}
