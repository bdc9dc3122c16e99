//! Shim throughput: N tasks of the hello program, each created, started, waited for and
//! deleted straight over the shim's ttrpc Task API, M at a time, with no containerd in the
//! path: what the shim alone costs.
//!
//! What containerd would do is done by hand: a bundle per task (`config.json` from
//! `ctr oci spec`, with the program in `rootfs/`), `<shim> -namespace NS -id ID -address
//! <containerd's socket> start` in the bundle (it prints the address of the shim's ttrpc
//! server: a new shim per task in per-pod mode, the engine's manager in shared mode), then
//! Create, Start, Wait, Delete and Shutdown over ttrpc. wasmrunner's shims (runwasi's
//! library) look the container's image up in containerd during Create, so each of their tasks
//! gets a container record first (over gRPC, untimed; no snapshot and no task: containerd
//! runs nothing). The shims publish their task events
//! to the private containerd's ttrpc socket (`TTRPC_ADDRESS`), which takes them and does
//! nothing with tasks it does not know. runc's shim (`containerd-shim-runc-v2`) goes through
//! the same steps with the static native hello: the floor.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use containerd_shim_protos::api::Empty;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::shim::{
    CreateTaskRequest, CreateTaskResponse, DeleteRequest, DeleteResponse, KillRequest,
    ShutdownRequest, StartRequest, StartResponse, WaitRequest, WaitResponse,
};
use containerd_shim_protos::ttrpc;
use serde::Serialize;
use serde_json::Value;
use wasmrunner_e2e::fixtures::{self, Target};
use wasmrunner_e2e::paths::bin_dir;

use crate::bench::Bench;
use crate::grpc::{Client, Template};
use crate::runtime::Runtime;
use crate::signals;
use crate::throughput::{Level, in_pool, template};

/// A ttrpc call that should answer at once (everything but Wait), in nanoseconds.
const CALL_TIMEOUT_NS: i64 = 30_000_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct ShimThroughput {
    pub tasks: usize,
    /// By runtime key (`runc`, `wasmtime_per_pod`, ...), then concurrency.
    pub runtimes: BTreeMap<String, Vec<Level>>,
    /// Runtimes whose tasks failed (by runtime key), with the first error.
    pub failed: BTreeMap<String, String>,
    pub via: &'static str,
}

impl ShimThroughput {
    pub fn tasks_per_s(&self, runtime: &Runtime, concurrency: usize) -> Option<f64> {
        crate::throughput::tasks_per_s(&self.runtimes, runtime, concurrency)
    }
}

/// What every task of one runtime shares: the shim binary, the program and the spec.
struct Recipe {
    label: String,
    shim: PathBuf,
    /// The program's path inside the rootfs (`hello.wasm`, `hello`) and on the host.
    program: (&'static str, PathBuf),
    spec: Value,
    namespace: String,
    /// containerd's gRPC socket: the shims' `-address` (and so what the bench's process
    /// accounting and cleanup recognise them by).
    address: String,
    ttrpc_address: String,
    bundles: PathBuf,
    /// The shims' compiled-module cache: the bench containerd's, as it would give its shims.
    module_cache: PathBuf,
    /// wasmrunner's shims (runwasi's library) read the container's image from containerd
    /// during Create: each task gets a container record (no snapshot, no task), made over
    /// gRPC before the task's timed part and deleted after it.
    record: Option<Template>,
}

/// containerd's gRPC client, for the container records.
struct Records<'a> {
    tokio: &'a tokio::runtime::Runtime,
    client: &'a Client,
}

pub fn run(bench: &Bench) -> Result<ShimThroughput> {
    let spec_text = bench
        .ctr(&["oci", "spec"])?
        .ok()
        .context("ctr oci spec")?
        .stdout;
    let spec: Value = serde_json::from_str(&spec_text).context("parsing `ctr oci spec`")?;
    let bundles = bench.scratch("shim-bundles");
    std::fs::create_dir_all(&bundles).with_context(|| format!("creating {}", bundles.display()))?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let client = tokio.block_on(Client::connect(&bench.socket(), bench.namespace()))?;
    let records = Records {
        tokio: &tokio,
        client: &client,
    };
    let _keeper = bench.keep_managers_alive()?;
    let mut runtimes = BTreeMap::new();
    let mut failed = BTreeMap::new();
    for runtime in &Runtime::all_and_floors() {
        signals::check()?;
        // A runtime that fails is reported and the others still run: this section is also
        // the stress test that finds such failures.
        match runtime_levels(bench, runtime, &spec, &bundles, &tokio, &client, &records) {
            Ok(levels) => {
                runtimes.insert(runtime.key(), levels);
            }
            Err(err) => {
                eprintln!("shim throughput: {} failed: {err:#}", runtime.label());
                failed.insert(runtime.key(), format!("{err:#}"));
            }
        }
    }
    Ok(ShimThroughput {
        tasks: bench.sizes.shim_tasks,
        runtimes,
        failed,
        via: "the shim's ttrpc Task API (start, Create, Start, Wait, Delete, Shutdown), no containerd",
    })
}

/// The warm-up task, then every concurrency level, for one runtime.
fn runtime_levels(
    bench: &Bench,
    runtime: &Runtime,
    spec: &Value,
    bundles: &Path,
    tokio: &tokio::runtime::Runtime,
    client: &Client,
    records: &Records<'_>,
) -> Result<Vec<Level>> {
    let mut recipe = recipe(bench, runtime, spec, bundles)?;
    // runc and the null shim read nothing from containerd.
    if !matches!(runtime, Runtime::Runc | Runtime::Null(_)) {
        recipe.record = Some(template(bench, tokio, client, runtime)?);
    }
    // Untimed: the first task loads the binaries (the shared manager is already up).
    run_task(
        &recipe,
        records,
        &bench.id(&format!("st-{}", runtime.tag())),
    )
    .with_context(|| format!("warm-up task of {} over ttrpc", runtime.label()))?;
    let mut levels = Vec::new();
    for &concurrency in &bench.sizes.concurrency {
        signals::check()?;
        let level = level(
            bench,
            &recipe,
            records,
            runtime,
            concurrency,
            bench.sizes.shim_tasks,
        )
        .with_context(|| format!("at concurrency {concurrency}"))?;
        eprintln!(
            "shim throughput: {} M={concurrency}: {:.1} tasks/s",
            runtime.label(),
            level.tasks_per_s
        );
        levels.push(level);
    }
    Ok(levels)
}

fn recipe(bench: &Bench, runtime: &Runtime, spec: &Value, bundles: &Path) -> Result<Recipe> {
    let shim = match runtime {
        Runtime::Runc => bench.containerd().bin_dir().join(runtime.shim_binary()),
        _ => bin_dir().join(runtime.shim_binary()),
    };
    ensure!(shim.is_file(), "{} is missing", shim.display());
    let program = match runtime {
        Runtime::Runc | Runtime::Null(_) => ("hello", fixtures::path("hello", Target::Native)?),
        _ => ("hello.wasm", fixtures::path("hello", Target::WasiP1)?),
    };
    let mut spec = spec.clone();
    spec["process"]["args"] = Value::from(vec![format!("/{}", program.0)]);
    spec["process"]["terminal"] = Value::from(false);
    spec["root"] = serde_json::json!({ "path": "rootfs" });
    let socket = bench.socket();
    Ok(Recipe {
        label: runtime.label(),
        shim,
        program,
        spec,
        namespace: bench.namespace().to_string(),
        ttrpc_address: format!("{socket}.ttrpc"),
        address: socket,
        bundles: bundles.to_path_buf(),
        module_cache: bench.containerd().module_cache_dir(),
        record: None,
    })
}

/// `tasks` tasks, `concurrency` at a time, each on a thread of its own.
fn level(
    bench: &Bench,
    recipe: &Recipe,
    records: &Records<'_>,
    runtime: &Runtime,
    concurrency: usize,
    tasks: usize,
) -> Result<Level> {
    let ids: Vec<String> = (0..tasks)
        .map(|_| bench.id(&format!("st-{}-m{concurrency}", runtime.tag())))
        .collect();
    let (wall, latencies) = in_pool(concurrency, tasks, |i| run_task(recipe, records, &ids[i]))?;
    Level::measured(concurrency, tasks, wall, &latencies)
}

/// One task's life, from its bundle to the shim's shutdown; the bundle is removed after.
/// Returns the time from `start` to the end of Shutdown (the bundle is written before).
fn run_task(recipe: &Recipe, records: &Records<'_>, id: &str) -> Result<Duration> {
    if let Some(template) = &recipe.record {
        records
            .tokio
            .block_on(records.client.create_record(template, id))?;
    }
    let result = run_bundle(recipe, id);
    if recipe.record.is_some() {
        let deleted = records.tokio.block_on(records.client.delete_record(id));
        let elapsed = result?;
        deleted?;
        return Ok(elapsed);
    }
    result
}

fn run_bundle(recipe: &Recipe, id: &str) -> Result<Duration> {
    let bundle = recipe.bundles.join(id);
    write_bundle(recipe, id, &bundle)?;
    let mut log = open_log(&bundle)?;
    let started = Instant::now();
    let result = drive(recipe, id, &bundle);
    let elapsed = started.elapsed();
    if result.is_err() {
        // What containerd does with a shim it lost: `<shim> delete` in the bundle.
        let _ = shim_command(recipe, id, &bundle).arg("delete").output();
    }
    let mut logged = Vec::new();
    let _ = log.read_to_end(&mut logged);
    drop(log);
    let removed = std::fs::remove_dir_all(&bundle)
        .with_context(|| format!("removing the bundle {}", bundle.display()));
    result.with_context(|| {
        format!(
            "{} task {id} (shim log: {})",
            recipe.label,
            String::from_utf8_lossy(&logged).trim()
        )
    })?;
    removed?;
    Ok(elapsed)
}

/// The `log` fifo in the bundle, which shims write their log to (containerd creates and
/// reads it; a shim that cannot open it does not start). Opened without blocking, read
/// after the task: a task's shim logs a few lines, far less than a pipe holds.
fn open_log(bundle: &Path) -> Result<std::fs::File> {
    let path = bundle.join("log");
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} has a NUL byte", path.display()))?;
    // SAFETY: `c_path` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("mkfifo {}", path.display()));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))
}

fn write_bundle(recipe: &Recipe, id: &str, bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let target = rootfs.join(recipe.program.0);
    if std::fs::hard_link(&recipe.program.1, &target).is_err() {
        std::fs::copy(&recipe.program.1, &target).with_context(|| {
            format!(
                "copying {} to {}",
                recipe.program.1.display(),
                target.display()
            )
        })?;
    }
    let mut spec = recipe.spec.clone();
    spec["linux"]["cgroupsPath"] = Value::from(format!("/{}/{id}", recipe.namespace));
    let config = bundle.join("config.json");
    let text = serde_json::to_vec_pretty(&spec).context("serializing the spec")?;
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))
}

/// `<shim> -namespace NS -id ID -address SOCKET`, in the bundle, with containerd's
/// addresses in the environment (as containerd starts shims).
fn shim_command(recipe: &Recipe, id: &str, bundle: &Path) -> Command {
    let mut command = Command::new(&recipe.shim);
    command
        .current_dir(bundle)
        .env("TTRPC_ADDRESS", &recipe.ttrpc_address)
        .env("GRPC_ADDRESS", &recipe.address)
        .env("NAMESPACE", &recipe.namespace)
        .env("WASMRUNNER_CACHE_DIR", &recipe.module_cache)
        .args(["-namespace", &recipe.namespace, "-id", id, "-address"])
        .arg(&recipe.address);
    command
}

/// The Task service of one shim: `containerd.task.v2.Task` (wasmrunner's and runwasi's
/// shims, and the Go shims of containerd 1.x), or `containerd.task.v3.Task` (the Go shims
/// of containerd 2.x, which say so in their bootstrap parameters). Version 3 keeps version
/// 2's messages, so the same protos serve both. Every call carries the namespace in the
/// metadata key containerd's Go shims read it from.
struct TaskApi {
    client: ttrpc::Client,
    service: &'static str,
    namespace: String,
}

impl TaskApi {
    fn call<Req: Message, Resp: Message>(
        &self,
        method: &'static str,
        request: &Req,
        timeout_ns: i64,
    ) -> Result<Resp> {
        let mut ctx = ttrpc::context::with_timeout(timeout_ns);
        ctx.add(
            "containerd-namespace-ttrpc".to_string(),
            self.namespace.clone(),
        );
        let mut call = ttrpc::Request::new();
        call.set_service(self.service.to_string());
        call.set_method(method.to_string());
        call.set_timeout_nano(ctx.timeout_nano);
        call.set_metadata(ttrpc::context::to_pb(ctx.metadata));
        call.payload = request
            .write_to_bytes()
            .with_context(|| format!("encoding the {method} request"))?;
        let response = self
            .client
            .request(call)
            .map_err(|e| anyhow!("{method}: {e:?}"))?;
        Resp::parse_from_bytes(&response.payload)
            .with_context(|| format!("decoding the {method} response"))
    }
}

/// `start`, then the task calls.
fn drive(recipe: &Recipe, id: &str, bundle: &Path) -> Result<()> {
    let output = shim_command(recipe, id, bundle)
        .arg("start")
        .output()
        .with_context(|| format!("running {} start", recipe.shim.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{} start exited with {}: {}{}",
            recipe.shim.display(),
            output.status,
            stdout.trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let (address, version) = shim_address(&stdout)?;
    let client = ttrpc::Client::connect(&address)
        .with_context(|| format!("connecting to the shim at {address}"))?;
    let task = TaskApi {
        client,
        service: if version >= 3 {
            "containerd.task.v3.Task"
        } else {
            "containerd.task.v2.Task"
        },
        namespace: recipe.namespace.clone(),
    };
    task.call::<_, CreateTaskResponse>(
        "Create",
        &CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.to_string_lossy().into_owned(),
            ..Default::default()
        },
        CALL_TIMEOUT_NS,
    )?;
    let waited = task
        .call::<_, StartResponse>(
            "Start",
            &StartRequest {
                id: id.to_string(),
                ..Default::default()
            },
            CALL_TIMEOUT_NS,
        )
        .and_then(|_| {
            task.call::<_, WaitResponse>(
                "Wait",
                &WaitRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
                0,
            )
        });
    if waited.is_err() {
        let _ = task.call::<_, Empty>(
            "Kill",
            &KillRequest {
                id: id.to_string(),
                signal: libc::SIGKILL as u32,
                all: true,
                ..Default::default()
            },
            CALL_TIMEOUT_NS,
        );
    }
    let deleted = task.call::<_, DeleteResponse>(
        "Delete",
        &DeleteRequest {
            id: id.to_string(),
            ..Default::default()
        },
        CALL_TIMEOUT_NS,
    );
    // containerd's last call to a shim: a per-pod shim exits, a shared manager with other
    // tasks stays. The connection may close before the answer.
    let _ = task.call::<_, Empty>(
        "Shutdown",
        &ShutdownRequest {
            id: id.to_string(),
            ..Default::default()
        },
        CALL_TIMEOUT_NS,
    );
    let status = waited?.exit_status;
    deleted?;
    ensure!(status == 0, "exited with status {status}");
    Ok(())
}

/// What `start` prints: the address itself (task API version 2), or (containerd 2.x's
/// bootstrap protocol) a JSON object with `address` and the task API `version`.
fn shim_address(stdout: &str) -> Result<(String, u64)> {
    let text = stdout.trim();
    if text.starts_with('{') {
        let params: Value = serde_json::from_str(text)
            .with_context(|| format!("reading the shim's bootstrap parameters {text:?}"))?;
        let address = params["address"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("no address in the shim's bootstrap parameters {text:?}"))?;
        return Ok((address, params["version"].as_u64().unwrap_or(2)));
    }
    ensure!(!text.is_empty(), "the shim printed no address");
    Ok((text.to_string(), 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_addresses_are_read_in_both_forms() -> Result<()> {
        assert_eq!(
            shim_address("unix:///run/containerd/s/abc\n")?,
            ("unix:///run/containerd/s/abc".to_string(), 2)
        );
        assert_eq!(
            shim_address(r#"{"version":3,"address":"unix:///run/x","protocol":"ttrpc"}"#)?,
            ("unix:///run/x".to_string(), 3)
        );
        assert!(shim_address("  \n").is_err());
        Ok(())
    }
}
