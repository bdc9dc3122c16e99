//! What a guest may touch inside its container (issue #12): the policy under
//! `wasmrunner.dev/` in the container's annotations (the grant: `ctr run --annotation`, a
//! pod's or container's annotations under CRI) and in the image's config labels or manifest
//! annotations (what the module declares it needs). Files, network, env, memory, tables,
//! instances and a CPU deadline, each checked from inside the guest (the probe's output and
//! status) against a control run without the key; an engine that cannot enforce a key refuses
//! a policy that restricts it, and a bad policy is refused before the guest runs.

use std::io::ErrorKind;
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_cri::v1::ContainerStatus;
use wasmrunner_e2e::cri::pod::stream_lines;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::fixtures::Target;
use wasmrunner_e2e::images::{APP_CONF, Declares, GREETING, LINK_OUT, LINK_UP, REPORT, TestImage};
use wasmrunner_e2e::suite::delete_container;
use wasmrunner_e2e::{Case, Env, Outcome};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("version_lists_what_the_engine_enforces", version_lists),
        Case::new("files_a_granted_directory_only", files_granted_directory),
        Case::new("files_mapped_read_only", files_mapped_read_only),
        Case::new(
            "files_links_do_not_leave_the_grant",
            files_links_stay_inside,
        ),
        Case::new("files_none", files_none),
        Case::new(
            "files_missing_directory_is_refused",
            files_missing_directory,
        ),
        Case::new("env_filtered_by_name", env_filtered),
        Case::new("env_none", env_none),
        Case::new("network_connect_only_where_granted", network_connect),
        Case::new("network_none", network_none),
        Case::new("network_listen_only_on_a_granted_port", network_listen),
        Case::new("memory_cap_fails_inside_the_guest", memory_cap),
        Case::new("memory_limit_is_the_default_cap", memory_limit_default),
        Case::new("cpu_deadline_stops_a_spinning_guest", cpu_deadline_spin),
        Case::new(
            "cpu_deadline_counts_cpu_time_not_wall_time",
            cpu_deadline_sleep,
        ),
        Case::new("tables_over_the_limit_are_refused", tables),
        Case::new("instances_over_the_limit_are_refused", instances),
        Case::new(
            "image_need_outside_the_grant_is_refused",
            image_need_not_granted,
        ),
        Case::new("image_declaration_narrows_the_env", image_narrows_env),
        Case::new("bad_policy_is_refused_before_the_guest_runs", bad_policy),
        Case::new("cri_pod_annotation_filters_env", cri_pod_annotation),
        Case::new(
            "cri_container_annotation_filters_env",
            cri_container_annotation,
        ),
        Case::new("cri_memory_limit_is_the_default_cap", cri_memory_limit),
    ]
}

/// The keys each engine enforces, in the order its `--version` lists them: the expectation
/// every case here checks the engine against. Any other key restricted for that engine must
/// be refused.
const ENFORCED: &[(&str, &[&str])] = &[
    (
        "wasmtime",
        &[
            "files",
            "network",
            "env",
            "memory",
            "tables",
            "instances",
            "cpu-deadline",
            "http-concurrency",
            "http-timeout",
            "http-address",
        ],
    ),
    ("wasmedge", &["files", "env", "memory"]),
    ("wasmer", &["files", "env", "memory"]),
];

/// The status the guest ends with when it passes its CPU deadline (128 + SIGXCPU).
const CPU_DEADLINE_STATUS: i32 = 152;
/// The probe in the capability image, with nothing declared.
const PLAIN: TestImage = TestImage::Capable(Target::WasiP1, Declares::Nothing);
const WAIT: Duration = Duration::from_secs(20);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

fn enforced(env: &Env) -> Option<&'static [&'static str]> {
    ENFORCED
        .iter()
        .find(|(engine, _)| *engine == env.engine.name)
        .map(|(_, keys)| *keys)
}

fn enforces(env: &Env, key: &str) -> bool {
    enforced(env).is_some_and(|keys| keys.contains(&key))
}

/// `ctr run` flags granting `wasmrunner.dev/KEY=VALUE` for each pair.
fn grant(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(key, value)| {
            [
                "--annotation".to_string(),
                format!("wasmrunner.dev/{key}={value}"),
            ]
        })
        .collect()
}

/// [`grant`] plus `--net-host`: the guest shares the node's loopback with the test.
fn grant_on_host_network(pairs: &[(&str, &str)]) -> Vec<String> {
    let mut flags = grant(pairs);
    flags.push("--net-host".to_string());
    flags
}

/// `ctr run --rm` of a probe image with `flags`: `/probe.wasm ARGS...`.
fn probe(env: &Env, image: TestImage, flags: &[String], args: &[&str]) -> Result<Outcome> {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut command = vec!["/probe.wasm"];
    command.extend_from_slice(args);
    env.run_rm_with(image, &flags, &command)
}

/// The probes each case runs on this engine: the wasip1 module, and the wasip2 component
/// where the engine runs components.
fn targets(env: &Env) -> Vec<Target> {
    let mut targets = vec![Target::WasiP1];
    if env.engine.runs_components() {
        targets.push(Target::WasiP2);
    }
    targets
}

/// The status of a probe command that failed (`probe: ...`, exit 2): a component's
/// non-zero exit is 1 (WASI preview 2's exit carries no number).
fn probe_failure(target: Target) -> i32 {
    match target {
        Target::WasiP2 => 1,
        _ => 2,
    }
}

/// What the engine's error lines on stderr start with.
fn error_prefix(env: &Env) -> String {
    format!("wasmrunner ({}): error: ", env.engine.name)
}

/// The workload was refused before its guest ran: status 126, nothing on stdout, and a line
/// `wasmrunner (<engine>): error: ...` on stderr that holds each of `needles`.
fn expect_refused(env: &Env, out: Outcome, needles: &[&str]) -> Result<Outcome> {
    let out = out.expect_status(126)?;
    ensure!(
        out.stdout.is_empty(),
        "the guest ran although its workload was refused: {out}"
    );
    let prefix = error_prefix(env);
    ensure!(
        out.stderr
            .lines()
            .any(|line| line.starts_with(&prefix) && needles.iter().all(|n| line.contains(n))),
        "no line `{prefix}...` naming {needles:?} on stderr: {out}"
    );
    Ok(out)
}

/// The probe command failed inside the guest with `probe: WHAT...` on stderr.
fn expect_probe_failed(out: Outcome, target: Target, what: &str) -> Result<Outcome> {
    let out = out.expect_status(probe_failure(target))?;
    ensure!(
        out.stderr.contains(&format!("probe: {what}")),
        "expected the guest to report `probe: {what}...`: {out}"
    );
    Ok(out)
}

/// On an engine that does not enforce `key`, a grant that restricts it is refused, naming
/// the engine and the key: a restriction it ignored would be a wider grant than written.
fn expect_unenforced(env: &Env, key: &str, value: &str) -> Result<()> {
    let out = probe(env, PLAIN, &grant(&[(key, value)]), &["args"])?;
    let refusal = format!("{} cannot enforce wasmrunner.dev/{key}", env.engine.name);
    expect_refused(env, out, &[&refusal])?;
    Ok(())
}

/// A TCP listener of the test on 127.0.0.1 that counts the connections made to it.
struct Listener(TcpListener);

impl Listener {
    fn new() -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding a test listener")?;
        listener.set_nonblocking(true)?;
        Ok(Self(listener))
    }

    /// `127.0.0.1:PORT`.
    fn address(&self) -> Result<String> {
        Ok(self.0.local_addr()?.to_string())
    }

    /// How many connections reached it since the last call (a connection the guest made
    /// and closed waits in the accept queue).
    fn connections(&self) -> Result<usize> {
        let mut count = 0;
        loop {
            match self.0.accept() {
                Ok(_) => count += 1,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(count),
                Err(e) => return Err(e).context("accepting on a test listener"),
            }
        }
    }
}

/// A port on 127.0.0.1 that nothing listens on now.
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `--version` of the engine's binary lists the keys it enforces, as [`ENFORCED`] says.
fn version_lists(env: &Env) -> Result<()> {
    let Some(keys) = enforced(env) else {
        bail!(
            "no expected capabilities for engine {}: add it to ENFORCED",
            env.engine.name
        );
    };
    let binary = env.engine.binary()?;
    let output = std::process::Command::new(&binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| line.starts_with("Capabilities:"))
        .collect();
    let expected = format!(
        "Capabilities: {} (annotations wasmrunner.dev/<key>)",
        keys.join(", ")
    );
    ensure!(
        output.status.success() && lines == [expected.as_str()],
        "{} --version should print the line {expected:?} once:\n{text}",
        binary.display()
    );
    Ok(())
}

/// `files=/data:rw`: the guest reads and writes `/data` and reaches no other file of its
/// rootfs, which the same image shows in full without the key.
fn files_granted_directory(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let out = probe(env, image, &[], &["cat", "/etc/app.conf"])?.ok()?;
        ensure!(out.stdout == APP_CONF, "control run without a grant: {out}");
        let out = probe(env, image, &[], &["ls", "/"])?.ok()?;
        ensure!(
            out.stdout.lines().any(|l| l == "etc") && out.stdout.lines().any(|l| l == "data"),
            "control run without a grant: {out}"
        );

        let data = grant(&[("files", "/data:rw")]);
        let out = probe(env, image, &data, &["cat", "/data/greeting.txt"])?.ok()?;
        ensure!(out.stdout == GREETING, "unexpected contents: {out}");
        let out = probe(
            env,
            image,
            &data,
            &["write", "/data/new.txt", "by the guest"],
        )?
        .ok()?;
        ensure!(
            out.stdout == "wrote /data/new.txt: by the guest\n",
            "writing in a read-write grant: {out}"
        );
        for path in ["/etc/app.conf", "/srv/data/report.txt"] {
            let out = probe(env, image, &data, &["cat", path])?;
            expect_probe_failed(out, target, &format!("cat {path}:"))
                .with_context(|| format!("{target:?}: {path} is outside the grant"))?;
        }
        expect_root_holds_only(env, image, &data, target, &["data"])
            .with_context(|| format!("{target:?}: / is outside the grant"))?;
    }
    Ok(())
}

/// `ls /` under a grant that does not give `/`: it fails on Wasmtime and WasmEdge, which then
/// have no `/`. Wasmer's WASI always has one (WASIX's virtual root, descriptor 3, which Wasmer
/// offers whatever it is given), holding only the granted directories, each named by its
/// guest path (`/data`, which WASI's `readdir` shows as `//data`): there `ls /` lists exactly
/// `granted`, and nothing else of the rootfs.
fn expect_root_holds_only(
    env: &Env,
    image: TestImage,
    flags: &[String],
    target: Target,
    granted: &[&str],
) -> Result<()> {
    let out = probe(env, image, flags, &["ls", "/"])?;
    if env.engine.name != "wasmer" {
        expect_probe_failed(out, target, "ls /:")?;
        return Ok(());
    }
    let out = out.ok()?;
    let listed: Vec<&str> = out
        .stdout
        .lines()
        .map(|name| name.trim_start_matches('/'))
        .collect();
    ensure!(
        listed == granted,
        "/ should hold the granted {granted:?} and nothing else: {out}"
    );
    Ok(())
}

/// `files=/srv/data=/data:ro`: the guest's `/data` is the container's `/srv/data`, which it
/// reads and cannot write; `/srv/data` itself is not visible.
fn files_mapped_read_only(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let mapped = grant(&[("files", "/srv/data=/data:ro")]);
        let out = probe(env, image, &mapped, &["ls", "/data"])?.ok()?;
        ensure!(
            out.stdout == "report.txt\n",
            "the guest's /data should be the container's /srv/data: {out}"
        );
        let out = probe(env, image, &mapped, &["cat", "/data/report.txt"])?.ok()?;
        ensure!(out.stdout == REPORT, "unexpected contents: {out}");
        let out = probe(env, image, &mapped, &["write", "/data/new.txt", "x"])?;
        expect_probe_failed(out, target, "write /data/new.txt:")
            .with_context(|| format!("{target:?}: writing in a read-only grant"))?;
        let out = probe(env, image, &mapped, &["cat", "/srv/data/report.txt"])?;
        expect_probe_failed(out, target, "cat /srv/data/report.txt:")
            .with_context(|| format!("{target:?}: the unmapped path"))?;
    }
    Ok(())
}

/// `files=/data:rw`: a symbolic link in `/data` to a file outside it opens nothing, whether
/// it names the file by an absolute path or climbs to it with `..`; the same relative link
/// opens the file when the whole rootfs is granted (so it is the grant that stops it).
fn files_links_stay_inside(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let out = probe(env, image, &[], &["cat", LINK_UP])?.ok()?;
        ensure!(out.stdout == APP_CONF, "control run without a grant: {out}");
        let data = grant(&[("files", "/data:rw")]);
        for link in [LINK_OUT, LINK_UP] {
            let out = probe(env, image, &data, &["cat", link])?;
            expect_probe_failed(out, target, &format!("cat {link}:"))
                .with_context(|| format!("{target:?}: {link} leads out of the grant"))?;
        }
    }
    Ok(())
}

/// `files=none`: no file at all.
fn files_none(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let none = grant(&[("files", "none")]);
        for args in [
            &["cat", "/data/greeting.txt"][..],
            &["cat", "/etc/app.conf"],
        ] {
            let out = probe(env, image, &none, args)?;
            expect_probe_failed(out, target, &format!("{}:", args.join(" ")))
                .with_context(|| format!("{target:?} with files=none"))?;
        }
        expect_root_holds_only(env, image, &none, target, &[])
            .with_context(|| format!("{target:?} with files=none"))?;
    }
    Ok(())
}

/// A granted directory the container does not have: refused (126), naming the key.
fn files_missing_directory(env: &Env) -> Result<()> {
    let out = probe(env, PLAIN, &grant(&[("files", "/missing:rw")]), &["args"])?;
    expect_refused(env, out, &["wasmrunner.dev/files"])?;
    Ok(())
}

/// The container's variables for the env cases.
const VARS: [&str; 6] = [
    "--env",
    "APP_NAME=web",
    "--env",
    "APP_MODE=test",
    "--env",
    "OTHER=x",
];

fn with_vars(mut flags: Vec<String>) -> Vec<String> {
    flags.extend(VARS.iter().map(|v| v.to_string()));
    flags
}

/// `env=APP_*`: the guest sees the `APP_` variables and no other.
fn env_filtered(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let out = probe(
            env,
            image,
            &with_vars(vec![]),
            &["env", "APP_NAME", "OTHER"],
        )?
        .ok()?;
        ensure!(
            out.stdout == "APP_NAME=web\nOTHER=x\n",
            "control run without a grant: {out}"
        );
        let filtered = with_vars(grant(&[("env", "APP_*")]));
        let out = probe(env, image, &filtered, &["env", "APP_NAME", "OTHER"])?.ok()?;
        ensure!(
            out.stdout == "APP_NAME=web\nOTHER unset\n",
            "{target:?} with env=APP_*: {out}"
        );
        let out = probe(env, image, &filtered, &["environ"])?.ok()?;
        ensure!(
            out.stdout == "APP_MODE=test\nAPP_NAME=web\nvariables: 2\n",
            "{target:?} with env=APP_*, every variable: {out}"
        );
    }
    Ok(())
}

/// `env=none`: no variable.
fn env_none(env: &Env) -> Result<()> {
    for target in targets(env) {
        let image = TestImage::Capable(target, Declares::Nothing);
        let out = probe(
            env,
            image,
            &with_vars(grant(&[("env", "none")])),
            &["environ"],
        )?
        .ok()?;
        ensure!(
            out.stdout == "variables: 0\n",
            "{target:?} with env=none: {out}"
        );
    }
    Ok(())
}

/// The wasip2 probe (sockets are WASI preview 2's).
const SOCKETS: TestImage = TestImage::Capable(Target::WasiP2, Declares::Nothing);

/// `network=connect=127.0.0.1:<allowed>`: on the host's network, the guest connects to the
/// allowed listener and not to a second one; without the key it connects to both.
fn network_connect(env: &Env) -> Result<()> {
    if !enforces(env, "network") {
        return expect_unenforced(env, "network", "connect=127.0.0.1:9");
    }
    let (allowed, other) = (Listener::new()?, Listener::new()?);
    let (a, b) = (allowed.address()?, other.address()?);
    let flags = grant_on_host_network(&[("network", &format!("connect={a}"))]);
    let out = probe(env, SOCKETS, &flags, &["connect", &a, &b])?.expect_status(1)?;
    let lines: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        lines.len() == 2
            && lines[0] == format!("connected {a}")
            && lines[1].starts_with(&format!("connect {b}: failed: ")),
        "with network=connect={a}: {out}"
    );
    let seen = (allowed.connections()?, other.connections()?);
    ensure!(
        seen == (1, 0),
        "with network=connect={a}, the allowed and the other listener saw {seen:?} connections, expected (1, 0): {out}"
    );

    // Control: without the key (the default, `all`) the guest connects to both.
    let out = probe(
        env,
        SOCKETS,
        &grant_on_host_network(&[]),
        &["connect", &a, &b],
    )?
    .ok()?;
    ensure!(
        out.stdout == format!("connected {a}\nconnected {b}\n"),
        "control run without a grant (network defaults to all): {out}"
    );
    let seen = (allowed.connections()?, other.connections()?);
    ensure!(
        seen == (1, 1),
        "control run: the listeners saw {seen:?} connections, expected (1, 1): {out}"
    );
    Ok(())
}

/// `network=none`: no connection, no listening socket.
fn network_none(env: &Env) -> Result<()> {
    if !enforces(env, "network") {
        return expect_unenforced(env, "network", "none");
    }
    let listener = Listener::new()?;
    let address = listener.address()?;
    let none = grant_on_host_network(&[("network", "none")]);
    let out = probe(env, SOCKETS, &none, &["connect", &address])?.expect_status(1)?;
    ensure!(
        out.stdout
            .starts_with(&format!("connect {address}: failed: ")),
        "with network=none: {out}"
    );
    ensure!(
        listener.connections()? == 0,
        "with network=none the guest's connection reached the listener: {out}"
    );
    let port = free_port()?.to_string();
    let out = probe(env, SOCKETS, &none, &["listen", &port])?.expect_status(1)?;
    ensure!(
        out.stdout.starts_with(&format!("listen {port}: failed: ")),
        "with network=none: {out}"
    );
    Ok(())
}

/// `network=listen=<port>`: the guest listens on that port (the test connects to it) and on
/// no other, and connects nowhere.
fn network_listen(env: &Env) -> Result<()> {
    if !enforces(env, "network") {
        return expect_unenforced(env, "network", "listen=8080");
    }
    let port = free_port()?.to_string();
    let flags = grant_on_host_network(&[("network", &format!("listen={port}"))]);
    let flags_ref: Vec<&str> = flags.iter().map(String::as_str).collect();
    let task = env.start_attached_with(
        SOCKETS,
        &flags_ref,
        &["/probe.wasm", "listen", &port, "accept"],
    )?;
    let id = task.id.clone();
    let connected = TcpStream::connect(("127.0.0.1", port.parse::<u16>()?))
        .with_context(|| format!("connecting to the guest's listener on {port}"));
    let out = match connected {
        Ok(stream) => {
            drop(stream);
            task.wait(WAIT)?
        }
        Err(e) => {
            task.kill_and_remove(env, WAIT)?;
            return Err(e);
        }
    };
    delete_container(env, &id)?;
    env.assert_clean(&id)?;
    let out = out.ok()?;
    ensure!(
        out.stdout.contains(&format!("listening on {port}\n"))
            && out.stdout.contains("accepted a connection\n"),
        "with network=listen={port}: {out}"
    );

    let other = free_port()?.to_string();
    let out = probe(env, SOCKETS, &flags, &["listen", &other])?.expect_status(1)?;
    ensure!(
        out.stdout.starts_with(&format!("listen {other}: failed: ")),
        "with network=listen={port}, listening on {other}: {out}"
    );
    let listener = Listener::new()?;
    let address = listener.address()?;
    let out = probe(env, SOCKETS, &flags, &["connect", &address])?.expect_status(1)?;
    ensure!(
        out.stdout
            .starts_with(&format!("connect {address}: failed: "))
            && listener.connections()? == 0,
        "with network=listen={port}, connecting: {out}"
    );
    Ok(())
}

/// The sizes in the probe's `holding N MiB` lines.
fn held_mib(stdout: &str) -> Vec<u64> {
    stdout
        .lines()
        .filter_map(|line| {
            line.strip_prefix("holding ")?
                .strip_suffix(" MiB")?
                .parse()
                .ok()
        })
        .collect()
}

/// The guest ran out of memory inside: its allocator failed (Rust's abort, a trap: 134),
/// and the kernel did not kill it (137).
fn expect_allocation_failure(out: Outcome, context: &str) -> Result<Outcome> {
    ensure!(
        out.status != Some(137),
        "{context}: the container was killed (137) instead of failing inside: {out}"
    );
    let out = out.expect_status(134).context(context.to_string())?;
    ensure!(
        out.stderr.contains("memory allocation of"),
        "{context}: no allocation failure on stderr: {out}"
    );
    Ok(out)
}

/// `memory=32Mi`: growing memory fails inside the guest at 32 MiB.
fn memory_cap(env: &Env) -> Result<()> {
    let out = probe(env, PLAIN, &grant(&[("memory", "32Mi")]), &["grow"])?;
    let out = expect_allocation_failure(out, "grow with memory=32Mi")?;
    let held = held_mib(&out.stdout);
    ensure!(
        !held.is_empty() && held.iter().all(|mib| *mib <= 32),
        "with memory=32Mi the guest held {held:?} MiB: {out}"
    );
    Ok(())
}

const MEMORY_LIMIT: i64 = 256 << 20;

/// No key, but a container memory limit (`ctr run --memory-limit`): the limit is the cap,
/// so a 1 GiB allocation fails inside the guest instead of the cgroup killing it.
fn memory_limit_default(env: &Env) -> Result<()> {
    let flags = vec!["--memory-limit".to_string(), MEMORY_LIMIT.to_string()];
    let out = probe(env, PLAIN, &flags, &["alloc", "1024"])?;
    expect_allocation_failure(out, "alloc 1024 under a 256 MiB container limit")?;
    Ok(())
}

/// `cpu-deadline=1s`: a spinning guest is stopped (152) within a few seconds, and the
/// message names the key.
fn cpu_deadline_spin(env: &Env) -> Result<()> {
    if !enforces(env, "cpu-deadline") {
        return expect_unenforced(env, "cpu-deadline", "1s");
    }
    env.image(PLAIN)?;
    let started = Instant::now();
    let out = probe(env, PLAIN, &grant(&[("cpu-deadline", "1s")]), &["spin"])?;
    let took = started.elapsed();
    let out = out.expect_status(CPU_DEADLINE_STATUS)?;
    ensure!(
        out.stdout.starts_with("ready\n"),
        "the guest never ran: {out}"
    );
    ensure!(
        out.stderr.contains("wasmrunner.dev/cpu-deadline"),
        "the message does not name the key: {out}"
    );
    ensure!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "a 1 s CPU deadline stopped the spinning guest after {took:?} of wall time: {out}"
    );
    Ok(())
}

/// `cpu-deadline=1s` counts CPU time: a sleeping guest still runs after 3 s.
fn cpu_deadline_sleep(env: &Env) -> Result<()> {
    if !enforces(env, "cpu-deadline") {
        return expect_unenforced(env, "cpu-deadline", "1s");
    }
    let flags = grant(&[("cpu-deadline", "1s")]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let task = env.start_attached_with(PLAIN, &flags, &["/probe.wasm", "sleep"])?;
    std::thread::sleep(Duration::from_secs(3));
    let status = env.task_status(&task.id)?;
    task.kill_and_remove(env, WAIT)
        .context("a sleeping guest under a CPU deadline, killed after 3 s")?;
    ensure!(
        status.as_deref() == Some("RUNNING"),
        "a guest that sleeps was stopped by a 1 s CPU deadline within 3 s (task status {status:?})"
    );
    Ok(())
}

/// `tables=10`: a module whose table has 1000 elements is refused (126) with a message
/// about its table; with no key, or a limit it fits, it runs.
fn tables(env: &Env) -> Result<()> {
    env.run_rm(TestImage::BigTable, &[])?
        .ok()
        .context("the table module without a limit")?;
    if !enforces(env, "tables") {
        return expect_unenforced(env, "tables", "10");
    }
    let flags = grant(&[("tables", "10")]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let out = env.run_rm_with(TestImage::BigTable, &flags, &[])?;
    expect_refused(env, out, &["/elements.wasm", "table"])?;
    let flags = grant(&[("tables", "1000")]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    env.run_rm_with(TestImage::BigTable, &flags, &[])?
        .ok()
        .context("tables=1000 for a table of 1000 elements")?;
    Ok(())
}

/// `instances=1`: a module (one instance) runs; the wasip2 component, which instantiates
/// several core modules, is refused (126) with a message about instances; with room for
/// them it runs.
fn instances(env: &Env) -> Result<()> {
    if !enforces(env, "instances") {
        return expect_unenforced(env, "instances", "1");
    }
    let one = grant(&[("instances", "1")]);
    probe(env, PLAIN, &one, &["exit", "0"])?
        .ok()
        .context("a module with instances=1")?;
    let out = probe(env, SOCKETS, &one, &["exit", "0"])?;
    expect_refused(env, out, &["/probe.wasm", "instance"])
        .context("a component with instances=1")?;
    probe(env, SOCKETS, &grant(&[("instances", "50")]), &["exit", "0"])?
        .ok()
        .context("a component with instances=50")?;
    Ok(())
}

/// An image that declares `network=connect=127.0.0.1:9` (config label), run with
/// `network=none`, is refused: "the image needs wasmrunner.dev/network". Without a grant it
/// runs with what it declared: no connection elsewhere.
fn image_need_not_granted(env: &Env) -> Result<()> {
    let target = if enforces(env, "network") {
        Target::WasiP2
    } else {
        Target::WasiP1
    };
    let image = TestImage::Capable(target, Declares::NetworkByLabel);
    let out = probe(env, image, &grant(&[("network", "none")]), &["args"])?;
    expect_refused(env, out, &["the image needs wasmrunner.dev/network"])?;
    if !enforces(env, "network") {
        // The declaration alone restricts the network, which this engine cannot enforce.
        let out = probe(env, image, &[], &["args"])?;
        let refusal = format!("{} cannot enforce wasmrunner.dev/network", env.engine.name);
        expect_refused(env, out, &[&refusal])?;
        return Ok(());
    }
    let listener = Listener::new()?;
    let address = listener.address()?;
    let out = probe(
        env,
        image,
        &grant_on_host_network(&[]),
        &["connect", &address],
    )?
    .expect_status(1)
    .context("the image declares connect=127.0.0.1:9 only")?;
    ensure!(
        out.stdout
            .starts_with(&format!("connect {address}: failed: "))
            && listener.connections()? == 0,
        "the image's declaration did not narrow the network: {out}"
    );
    let covering = grant_on_host_network(&[("network", "connect=127.0.0.0/8:*")]);
    probe(env, image, &covering, &["args"])?
        .ok()
        .context("a grant that covers the image's need")?;
    Ok(())
}

/// An image that declares `env=APP_NAME` (config label, or manifest annotation) sees only
/// `APP_NAME` without a grant and under `env=APP_*`; a grant that lacks it is refused.
fn image_narrows_env(env: &Env) -> Result<()> {
    for declares in [Declares::EnvByLabel, Declares::EnvByAnnotation] {
        let image = TestImage::Capable(Target::WasiP1, declares);
        for flags in [with_vars(vec![]), with_vars(grant(&[("env", "APP_*")]))] {
            let out = probe(env, image, &flags, &["environ"])?.ok()?;
            ensure!(
                out.stdout == "APP_NAME=web\nvariables: 1\n",
                "{declares:?} with {flags:?}: {out}"
            );
        }
        let out = probe(
            env,
            image,
            &with_vars(grant(&[("env", "OTHER")])),
            &["environ"],
        )?;
        expect_refused(env, out, &["the image needs wasmrunner.dev/env"])
            .with_context(|| format!("{declares:?} with env=OTHER"))?;
    }
    Ok(())
}

/// Each bad policy (annotation, value) is refused (126) before the guest runs, naming the
/// key; all are tried, and every failure reported.
fn bad_policy(env: &Env) -> Result<()> {
    const BAD: [(&str, &str); 6] = [
        ("wasmrunner.dev/filez", "/data"),
        ("wasmrunner.dev/memory", "lots"),
        ("wasmrunner.dev/files", "data"),
        ("wasmrunner.dev/files", "/data/../etc"),
        ("wasmrunner.dev/network", "connect=300.1.1.1:80"),
        ("wasmrunner.dev/cpu-deadline", "0s"),
    ];
    let mut problems = Vec::new();
    for (key, value) in BAD {
        let annotation = format!("{key}={value}");
        let out = env.run_rm_with(
            PLAIN,
            &["--annotation", &annotation],
            &["/probe.wasm", "args"],
        )?;
        if let Err(e) = expect_refused(env, out, &[key]) {
            problems.push(format!("{annotation}: {e:#}"));
        }
    }
    ensure!(problems.is_empty(), "{}", problems.join("\n\n"));
    Ok(())
}

fn expect_exit(status: &ContainerStatus, code: i32, reason: &str) -> Result<()> {
    ensure!(
        status.exit_code == code && status.reason == reason,
        "container ended with exit code {} reason {:?} (message {:?}), expected {code} {reason:?}",
        status.exit_code,
        status.reason,
        status.message
    );
    Ok(())
}

/// Waits until container `name`'s CRI log has `count` stdout lines; returns them.
fn wait_for_lines(pod: &Pod, name: &str, count: usize) -> Result<Vec<String>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let lines = stream_lines(&pod.log(name, 0)?, "stdout");
        if lines.len() >= count || Instant::now() > deadline {
            return Ok(lines);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The probe for the CRI env cases: its env has `APP_NAME` and `OTHER`, and kubelet's
/// `POD_NAME`.
fn env_container(name: &str) -> ContainerSpec {
    ContainerSpec::new(name, PLAIN, &["env", "APP_NAME", "OTHER", "POD_NAME"])
        .env("APP_NAME", "web")
        .env("OTHER", "x")
}

/// Runs `spec` in `pod` to completion (exit 0) and returns its stdout lines.
fn run_to_completion(pod: &mut Pod, spec: &ContainerSpec, lines: usize) -> Result<Vec<String>> {
    let id = pod.run_container(spec)?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    let log = wait_for_lines(pod, &spec.name, lines)?;
    expect_exit(&status, 0, "Completed")
        .with_context(|| format!("container {}: log {log:?}", spec.name))?;
    Ok(log)
}

/// A pod annotation `wasmrunner.dev/env=APP_*` reaches the shim: the container's guest
/// sees `APP_NAME` and neither `OTHER` nor kubelet's `POD_NAME`.
fn cri_pod_annotation(env: &Env) -> Result<()> {
    let spec = PodSpec::new("caps-pod", &env.engine.handler(), Network::Host)
        .annotation("wasmrunner.dev/env", "APP_*");
    let mut pod = Pod::run(env, spec)?;
    let lines = run_to_completion(&mut pod, &env_container("probe"), 3)?;
    ensure!(
        lines == ["APP_NAME=web", "OTHER unset", "POD_NAME unset"],
        "a pod annotation env=APP_* on containerd {}: {lines:?}",
        env.containerd.version
    );
    pod.remove()?.assert_clean()
}

/// A container annotation `wasmrunner.dev/env=APP_*` reaches the shim for that container;
/// its neighbour without it sees every variable.
fn cri_container_annotation(env: &Env) -> Result<()> {
    let mut pod = Pod::run(
        env,
        PodSpec::new("caps-container", &env.engine.handler(), Network::Host),
    )?;
    let filtered = env_container("filtered").annotation("wasmrunner.dev/env", "APP_*");
    let lines = run_to_completion(&mut pod, &filtered, 3)?;
    ensure!(
        lines == ["APP_NAME=web", "OTHER unset", "POD_NAME unset"],
        "a container annotation env=APP_* on containerd {}: {lines:?}",
        env.containerd.version
    );
    let lines = run_to_completion(&mut pod, &env_container("plain"), 3)?;
    ensure!(
        lines == ["APP_NAME=web", "OTHER=x", "POD_NAME=caps-container"],
        "the container without the annotation: {lines:?}"
    );
    pod.remove()?.assert_clean()
}

/// A CRI container memory limit of 256 MiB, no key: a 1 GiB allocation fails inside the
/// guest (134, "memory allocation" in the log), not OOMKilled.
fn cri_memory_limit(env: &Env) -> Result<()> {
    let mut pod = Pod::run(
        env,
        PodSpec::new("caps-memory", &env.engine.handler(), Network::Host)
            .memory_limit(MEMORY_LIMIT),
    )?;
    let spec = ContainerSpec::new("alloc", PLAIN, &["alloc", "1024"]).memory_limit(MEMORY_LIMIT);
    let id = pod.run_container(&spec)?;
    let status = pod.wait_exited(&id, EXIT_TIMEOUT)?;
    let deadline = Instant::now() + WAIT;
    let stderr = loop {
        let stderr = stream_lines(&pod.log("alloc", 0)?, "stderr");
        if stderr.iter().any(|l| l.contains("memory allocation of")) || Instant::now() > deadline {
            break stderr;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    expect_exit(&status, 134, "Error")
        .with_context(|| format!("alloc 1024 under a 256 MiB limit; stderr {stderr:?}"))?;
    ensure!(
        stderr.iter().any(|l| l.contains("memory allocation of")),
        "no allocation failure in the CRI log: {stderr:?}"
    );
    pod.remove()?.assert_clean()
}
