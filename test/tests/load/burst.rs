//! A burst: many CRI pods created at the same moment, as a node sees when a deployment
//! scales up. Every pod must start its container, which must exit 0 with its output in its
//! CRI log; the figures are the time until all had started and each pod's own time.

use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail, ensure};
use wasmrunner_e2e::Env;
use wasmrunner_e2e::cri::{ContainerSpec, Network, Pod, PodSpec};
use wasmrunner_e2e::images::TestImage;

const EXIT_LIMIT: Duration = Duration::from_secs(180);
const LOG_LIMIT: Duration = Duration::from_secs(20);

/// What a burst measured.
pub struct Burst {
    pub pods: usize,
    /// From the moment every pod was asked for until the last container had started.
    pub all_started: Duration,
    /// Each pod's time from RunPodSandbox to StartContainer's return, sorted.
    pub per_pod: Vec<Duration>,
}

impl std::fmt::Display for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} pods all started in {:.2} s; per pod p50 {:.2} s, p99 {:.2} s, max {:.2} s",
            self.pods,
            self.all_started.as_secs_f64(),
            percentile(&self.per_pod, 50).as_secs_f64(),
            percentile(&self.per_pod, 99).as_secs_f64(),
            self.per_pod
                .last()
                .copied()
                .unwrap_or_default()
                .as_secs_f64(),
        )
    }
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Creates `pods` pods of `handler` at once, each running `image` with the probe's `args`
/// command; checks each container's exit and log, then removes every pod and checks that
/// nothing of it is left.
pub fn burst(env: &Env, handler: &str, image: TestImage, pods: usize) -> Result<Burst> {
    env.k8s_image(image)?;
    let start_line = Barrier::new(pods);
    let burst_start = Mutex::new(None::<Instant>);
    let results: Vec<Result<(Duration, Duration)>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..pods)
            .map(|n| {
                let (start_line, burst_start) = (&start_line, &burst_start);
                scope.spawn(move || {
                    if start_line.wait().is_leader()
                        && let Ok(mut start) = burst_start.lock()
                    {
                        *start = Some(Instant::now());
                    }
                    one_pod(env, handler, image, n, burst_start)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| {
                thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("a burst thread panicked")))
            })
            .collect()
    });
    let mut per_pod = Vec::with_capacity(pods);
    let mut all_started = Duration::ZERO;
    let mut failures = Vec::new();
    for (n, result) in results.into_iter().enumerate() {
        match result {
            Ok((own, since_burst)) => {
                per_pod.push(own);
                all_started = all_started.max(since_burst);
            }
            Err(err) => failures.push(format!("pod {n}: {err:#}")),
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} of {pods} pods failed; the first: {:#?}",
            failures.len(),
            &failures[..failures.len().min(5)]
        );
    }
    per_pod.sort();
    Ok(Burst {
        pods,
        all_started,
        per_pod,
    })
}

/// One pod of the burst: its own start-up time and the time since the burst began, once its
/// container started; then its container must exit 0 with its line logged.
fn one_pod(
    env: &Env,
    handler: &str,
    image: TestImage,
    n: usize,
    burst_start: &Mutex<Option<Instant>>,
) -> Result<(Duration, Duration)> {
    let asked = Instant::now();
    let name = format!("burst-{n}");
    let mut pod = Pod::run(env, PodSpec::new(&name, handler, Network::Host))?;
    let id = pod.run_container(&ContainerSpec::new("burst", image, &["args", &name]))?;
    let own = asked.elapsed();
    let since_burst = burst_start
        .lock()
        .map_err(|_| anyhow!("the burst clock is poisoned"))?
        .map_or(own, |start| start.elapsed());
    let status = pod.wait_exited(&id, EXIT_LIMIT)?;
    ensure!(
        status.exit_code == 0,
        "{name}: its container exited {}",
        status.exit_code
    );
    pod.wait_for_stdout("burst", 0, &format!("arg[2]={name}"), LOG_LIMIT)?;
    pod.remove()?.assert_clean()?;
    Ok((own, since_burst))
}
