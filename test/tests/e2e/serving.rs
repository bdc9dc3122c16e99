//! Serving: `wasi:http` components answering HTTP as a Kubernetes service does, and a WASI
//! p2 component that listens with `wasi:sockets` itself.
//!
//! `ctr run --net-host` cases reach the server on the node's loopback at a port of their own
//! (`WASMTIME_HTTP_PROXY_SOCKET_ADDR`); CRI cases run the pod on the CNI bridge and reach it
//! at its pod IP, as a Service or a kubelet probe does. The fixture (`test/fixtures/http`)
//! prints `request METHOD PATH` for every request, which the container's log must show.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::http::{self, Request};
use wasmrunner_e2e::images::{HTTP_HELLO, RUN_CALLED, SOCKET_HELLO, TestImage};
use wasmrunner_e2e::registry::free_port;
use wasmrunner_e2e::suite::{Attached, Needs, delete_container};
use wasmrunner_e2e::{Case, Engine, Env};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("ctr_serves_requests", ctr_serves_requests).needs(&[Needs::Components]),
        Case::new("trap_gets_500_and_serving_goes_on", trap_gets_500).needs(&[Needs::Components]),
        Case::new("timeout_and_concurrency_cap", timeout_and_concurrency_cap)
            .needs(&[Needs::Components]),
        Case::new("sigterm_drains_in_flight_requests", sigterm_drains).needs(&[Needs::Components]),
        Case::new(
            "command_with_handler_is_served",
            command_with_handler_is_served,
        )
        .needs(&[Needs::Components]),
        Case::new(
            "outgoing_http_follows_the_grant",
            outgoing_http_follows_the_grant,
        )
        .needs(&[Needs::Components]),
        Case::new(
            "listen_outside_the_grant_is_refused",
            listen_outside_the_grant,
        )
        .needs(&[Needs::Components]),
        Case::new("address_from_the_annotation", address_from_the_annotation)
            .needs(&[Needs::Components]),
        Case::new("pods_served_at_their_pod_ip", pods_served_at_their_pod_ip)
            .needs(&[Needs::Components]),
        Case::new("socket_server_component", socket_server_component).needs(&[Needs::Components]),
        Case::new(
            "engine_without_components_refuses",
            engine_without_components,
        )
        .needs(&[Needs::NoComponents]),
    ]
}

const ADDRESS_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";
const SERVE_TIMEOUT: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// A `ctr run --net-host` of a server on its own loopback port; stopped with SIGKILL unless
/// the case stops it otherwise.
pub(crate) struct Served {
    pub(crate) task: Attached,
    pub(crate) addr: SocketAddr,
}

impl Served {
    /// Served on a free loopback port, named by the container's address variable.
    pub(crate) fn start(env: &Env, image: TestImage, annotations: &[(&str, &str)]) -> Result<Self> {
        Self::start_at(env, image, loopback(free_port()?), annotations)
    }

    /// Served at `addr`, named by the container's address variable.
    fn start_at(
        env: &Env,
        image: TestImage,
        addr: SocketAddr,
        annotations: &[(&str, &str)],
    ) -> Result<Self> {
        Self::launch(
            env,
            image,
            addr,
            &[(ADDRESS_ENV, &addr.to_string())],
            annotations,
        )
    }

    /// `ctr run --net-host` of `image` with `vars` and `annotations`, once `addr` answers.
    fn launch(
        env: &Env,
        image: TestImage,
        addr: SocketAddr,
        vars: &[(&str, &str)],
        annotations: &[(&str, &str)],
    ) -> Result<Self> {
        let mut flags = vec!["--net-host".to_string()];
        for (name, value) in vars {
            flags.extend(["--env".to_string(), format!("{name}={value}")]);
        }
        for (key, value) in annotations {
            flags.extend(["--annotation".to_string(), format!("{key}={value}")]);
        }
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let task = env.spawn_attached(image, &flags, &[])?;
        let served = Self { task, addr };
        if let Err(err) = http::wait_until_serving(addr, "/", SERVE_TIMEOUT) {
            bail!(
                "{err:#}; stdout {:?}, stderr {:?}",
                served.task.stdout(),
                served.task.stderr()
            );
        }
        Ok(served)
    }

    pub(crate) fn stop(self, env: &Env) -> Result<()> {
        self.task.kill_and_remove(env, Duration::from_secs(20))
    }
}

fn expect(response: &http::Response, status: u16, body: &str, what: &str) -> Result<()> {
    ensure!(
        response.status == status && response.text() == body,
        "{what}: expected {status} {body:?}, got {response}"
    );
    Ok(())
}

/// GET, POST with a body, headers in, a streamed body, keep-alive, h2c, the env the guest
/// sees, and one stdout line per request in what `ctr` shows.
fn ctr_serves_requests(env: &Env) -> Result<()> {
    let served = Served::start(env, TestImage::HttpHello, &[])?;
    let addr = served.addr;
    expect(&http::get(addr, "/")?, 200, HTTP_HELLO, "GET /")?;

    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let echoed = http::send(addr, &Request::post("/echo", body.clone()), SERVE_TIMEOUT)?;
    ensure!(
        echoed.status == 200
            && echoed.body == body
            && echoed.header("x-echo-length") == Some("200000"),
        "POST /echo of 200000 bytes: {} {} bytes, x-echo-length {:?}",
        echoed.status,
        echoed.body.len(),
        echoed.header("x-echo-length")
    );

    let headers = http::send(
        addr,
        &Request::get("/headers").header("x-test", "1"),
        SERVE_TIMEOUT,
    )?;
    ensure!(
        headers.status == 200 && headers.text().lines().any(|l| l == "x-test: 1"),
        "GET /headers did not see x-test: {headers}"
    );

    let streamed = http::get(addr, "/stream?chunks=6")?;
    let expected: String = (0..6).map(|i| format!("chunk {i}\n")).collect();
    expect(&streamed, 200, &expected, "GET /stream")?;
    let spread = match (streamed.frames.first(), streamed.frames.last()) {
        (Some(first), Some(last)) => *last - *first,
        _ => Duration::ZERO,
    };
    ensure!(
        streamed.frames.len() >= 3 && spread >= Duration::from_millis(30),
        "the body of /stream came whole, not streamed: {} frames over {spread:?}",
        streamed.frames.len()
    );

    let both = http::send_on_one_connection(
        addr,
        &[Request::get("/"), Request::get("/env?name=PATH")],
        SERVE_TIMEOUT,
    )?;
    expect(
        &both[0],
        200,
        HTTP_HELLO,
        "first request of a keep-alive connection",
    )?;
    ensure!(
        both[1].status == 200,
        "second request of a keep-alive connection: {}",
        both[1]
    );
    let h2c = http::send_h2c(addr, &Request::get("/"), SERVE_TIMEOUT)?;
    ensure!(
        h2c.status == 200 && h2c.text() == HTTP_HELLO && h2c.version == "HTTP/2.0",
        "GET / over h2c: {h2c} ({})",
        h2c.version
    );
    let address_seen = http::get(addr, &format!("/env?name={ADDRESS_ENV}"))?;
    ensure!(
        address_seen.status == 404,
        "the guest sees {ADDRESS_ENV}, the runtime's setting: {address_seen}"
    );

    let logged = served.task.stdout();
    for line in [
        "request GET /",
        "request POST /echo",
        "request GET /stream?chunks=6",
    ] {
        ensure!(
            logged.lines().any(|l| l == line),
            "stdout lacks {line:?}: {logged:?}"
        );
    }
    served.stop(env)
}

/// A request whose guest traps gets a 500 and a line on stderr; the next one is served.
fn trap_gets_500(env: &Env) -> Result<()> {
    let served = Served::start(env, TestImage::HttpHello, &[])?;
    let trapped = http::get(served.addr, "/trap")?;
    ensure!(
        trapped.status == 500 && trapped.text().contains("trapped"),
        "GET /trap: {trapped}"
    );
    expect(
        &http::get(served.addr, "/")?,
        200,
        HTTP_HELLO,
        "GET / after a trap",
    )?;
    served.task.wait_for_stderr(
        |l| l.contains("GET /trap") && l.contains("500") && l.contains("trapped"),
        SERVE_TIMEOUT,
    )?;
    served.stop(env)
}

/// `http-timeout` stops a guest that computes without end, or waits too long (504);
/// `http-concurrency` caps the requests in guest code at once, the others waiting their turn.
fn timeout_and_concurrency_cap(env: &Env) -> Result<()> {
    let served = Served::start(
        env,
        TestImage::HttpHello,
        &[
            ("wasmrunner.dev/http-timeout", "1500ms"),
            ("wasmrunner.dev/http-concurrency", "1"),
        ],
    )?;
    let addr = served.addr;
    let started = Instant::now();
    let spun = http::get(addr, "/spin")?;
    let took = started.elapsed();
    ensure!(
        spun.status == 504 && took >= Duration::from_millis(1400) && took < Duration::from_secs(8),
        "GET /spin under a 1.5 s timeout: {spun} after {took:?}"
    );
    expect(
        &http::get(addr, "/")?,
        200,
        HTTP_HELLO,
        "GET / after a timeout",
    )?;

    let slow = std::thread::spawn(move || http::get(addr, "/sleep?ms=1000"));
    std::thread::sleep(Duration::from_millis(200));
    let queued = Instant::now();
    let waited = http::get(addr, "/")?;
    ensure!(
        waited.status == 200 && queued.elapsed() >= Duration::from_millis(500),
        "a request above the cap of 1 was not queued behind the slow one: {waited} after {:?}",
        queued.elapsed()
    );
    let slow = slow
        .join()
        .map_err(|_| anyhow::anyhow!("the slow request's thread panicked"))??;
    expect(&slow, 200, "slept 1000\n", "the slow request")?;

    let hog = http::get(addr, "/sleep?ms=3000")?;
    ensure!(
        hog.status == 504,
        "a 3 s request under a 1.5 s timeout: {hog}"
    );
    served.stop(env)
}

/// SIGTERM: the request in flight completes, new connections are refused, status 0.
fn sigterm_drains(env: &Env) -> Result<()> {
    let served = Served::start(env, TestImage::HttpHello, &[])?;
    let addr = served.addr;
    let slow = std::thread::spawn(move || http::get(addr, "/sleep?ms=1500"));
    std::thread::sleep(Duration::from_millis(300));
    let id = served.task.id.clone();
    env.containerd
        .ctr(&["task", "kill", "--signal", "SIGTERM", &id])?
        .ok()?;
    std::thread::sleep(Duration::from_millis(300));
    let closed = http::refused(addr);
    let slow = slow
        .join()
        .map_err(|_| anyhow::anyhow!("the slow request's thread panicked"))??;
    expect(
        &slow,
        200,
        "slept 1500\n",
        "the request in flight at SIGTERM",
    )?;
    let out = served.task.wait(Duration::from_secs(20))?;
    ensure!(out.status == Some(0), "after SIGTERM and a drain: {out}");
    ensure!(closed, "{addr} still accepted connections after SIGTERM");
    delete_container(env, &id)?;
    env.assert_clean(&id)
}

/// A component exporting both `wasi:cli/run` and the handler is served; `run` is not called.
fn command_with_handler_is_served(env: &Env) -> Result<()> {
    let served = Served::start(env, TestImage::HttpHelloCommand, &[])?;
    expect(&http::get(served.addr, "/")?, 200, HTTP_HELLO, "GET /")?;
    let stdout = served.task.stdout();
    ensure!(
        !stdout.contains(RUN_CALLED),
        "the served component's run was called: {stdout:?}"
    );
    served.stop(env)
}

/// A plain HTTP server on the node's loopback answering `upstream body` to every request.
fn upstream() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the upstream")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut head = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut head);
            let _ = std::io::Write::write_all(
                &mut stream,
                b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\nConnection: close\r\n\r\nupstream body\n",
            );
        }
    });
    Ok(addr)
}

/// Outgoing `wasi:http` requests reach what the network grant allows, and nothing else.
fn outgoing_http_follows_the_grant(env: &Env) -> Result<()> {
    let upstream = upstream()?;
    let fetch = format!("/fetch?url=http://{upstream}/x");
    let open = Served::start(env, TestImage::HttpHello, &[])?;
    expect(
        &http::get(open.addr, &fetch)?,
        200,
        "upstream 200\nupstream body\n",
        "an outgoing request under network = all",
    )?;
    open.stop(env)?;

    // The grant lets it listen on its own port and connect only to another one.
    let addr = loopback(free_port()?);
    let rules = format!(
        "listen={},connect=127.0.0.1:{}",
        addr.port(),
        upstream.port() ^ 1
    );
    let closed = Served::start_at(
        env,
        TestImage::HttpHello,
        addr,
        &[("wasmrunner.dev/network", &rules)],
    )?;
    let denied = http::get(addr, &fetch)?;
    ensure!(
        denied.status == 502 && denied.text().contains("DestinationIpProhibited"),
        "an outgoing request outside the grant: {denied}"
    );
    let by_name = http::get(
        addr,
        &format!("/fetch?url=http://localhost:{}/x", upstream.port()),
    )?;
    ensure!(
        by_name.status == 502,
        "an outgoing request to a name without `lookup`: {by_name}"
    );
    closed.stop(env)
}

/// A served component whose port the network grant does not cover does not start: 126 and
/// the reason on stderr.
fn listen_outside_the_grant(env: &Env) -> Result<()> {
    let flags = ["--net-host", "--annotation", "wasmrunner.dev/network=none"];
    let out = env.run_rm_with(TestImage::HttpHello, &flags, &[])?;
    ensure!(
        out.status == Some(126)
            && out.stderr.contains("does not allow listening on port 8080")
            && out.stderr.contains("wasmrunner.dev/network"),
        "serving without a listen grant: {out}"
    );
    Ok(())
}

/// `wasmrunner.dev/http-address` says where to serve, over the container's variable.
fn address_from_the_annotation(env: &Env) -> Result<()> {
    let (addr, decoy) = (loopback(free_port()?), loopback(free_port()?));
    let served = Served::launch(
        env,
        TestImage::HttpHello,
        addr,
        &[(ADDRESS_ENV, &decoy.to_string())],
        &[("wasmrunner.dev/http-address", &addr.to_string())],
    )?;
    let hello = http::get(addr, "/")?;
    expect(&hello, 200, HTTP_HELLO, "GET / at the annotation's address")?;
    ensure!(
        http::refused(decoy),
        "something serves at the variable's address {decoy} too"
    );
    served.stop(env)
}

/// Pods on the CNI bridge, each served at its own pod IP on 8080 (two at once: in shared
/// mode one manager serves both, each in its own network namespace); the request lines in
/// the CRI log's stdout, the guest's stderr in its stderr; StopContainer drains and ends
/// with 0.
fn pods_served_at_their_pod_ip(env: &Env) -> Result<()> {
    let handler = env.engine.handler();
    let mut pods = Vec::new();
    for name in ["web-a", "web-b"] {
        let mut pod = Pod::run(env, PodSpec::new(name, &handler, Network::Pod))?;
        let id = pod.run_container(&ContainerSpec::new("web", TestImage::HttpHello, &[]))?;
        pod.wait_running(&id, SERVE_TIMEOUT)?;
        let ip: IpAddr = pod
            .sandbox_status(false)?
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .context("no pod IP in the sandbox status")?
            .parse()
            .context("the pod IP")?;
        pods.push((pod, id, SocketAddr::new(ip, 8080)));
    }
    ensure!(
        pods[0].2 != pods[1].2,
        "two pods got one address: {}",
        pods[0].2
    );
    for (pod, id, addr) in &pods {
        http::wait_until_serving(*addr, "/", SERVE_TIMEOUT)?;
        let hello = http::get(*addr, "/")?;
        ensure!(
            hello.status == 200 && hello.text() == HTTP_HELLO,
            "GET / at the pod IP {addr}: {hello}; the container's log: {:?}",
            pod.log("web", 0)?
        );
        expect(&http::get(*addr, "/stderr")?, 200, "", "GET /stderr")?;
        pod.wait_for_stdout("web", 0, "request GET /stderr", SERVE_TIMEOUT)?;
        pod.wait_for_line("web", 0, "stderr", "to stderr /stderr", SERVE_TIMEOUT)?;
        let (took, status) = pod.stop_container(id, 10)?;
        ensure!(
            status.exit_code == 0 && took < Duration::from_secs(8),
            "StopContainer of a server: exit {} after {took:?}",
            status.exit_code
        );
    }
    for (pod, _, _) in pods {
        pod.remove()?.assert_clean()?;
    }
    Ok(())
}

/// A component that listens with `wasi:sockets` (Rust std's `TcpListener`) is a server too.
fn socket_server_component(env: &Env) -> Result<()> {
    let addr = loopback(free_port()?);
    let port = addr.port().to_string();
    let served = Served::launch(env, TestImage::SocketServer, addr, &[("PORT", &port)], &[])?;
    let answer = http::get(addr, "/")?;
    expect(&answer, 200, SOCKET_HELLO, "GET / of the socket server")?;
    served.task.wait_for_stdout("accepted", SERVE_TIMEOUT)?;
    served.stop(env)
}

/// An engine that runs no components says so for a wasi:http component too: 126 and why.
fn engine_without_components(env: &Env) -> Result<()> {
    let out = env.run_rm_with(TestImage::HttpHello, &["--net-host"], &[])?;
    ensure!(
        out.status == Some(126) && out.stderr.contains(Engine::COMPONENT_REFUSAL),
        "a wasi:http component on {}: {out}",
        env.engine.name
    );
    Ok(())
}
