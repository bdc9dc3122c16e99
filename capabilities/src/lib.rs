//! What a Wasm guest may touch, written down by the people who run it.
//!
//! A container is isolated as a whole (namespaces, cgroups, seccomp); inside it, WASI lets
//! the engine give the guest less: only some directories, some addresses, some variables,
//! and limits the engine enforces itself. This crate reads that policy and decides what the
//! guest gets; the engines enforce it.
//!
//! Two sources say something, with the same keys (all under [`ANNOTATION_PREFIX`]):
//! - the **grant**: the container's annotations (`ctr run --annotation`, or a Kubernetes
//!   pod's or container's annotations, which containerd passes to the shim for the names
//!   the node installer lists in `pod_annotations`/`container_annotations`);
//! - the **declaration**: the image's config labels or manifest annotations, saying what
//!   its module needs.
//!
//! [`resolve`] merges them. For the files, network and env keys the guest gets what the
//! image declares, and every declared need must lie inside the grant, or the workload is
//! refused naming the missing grant. For the limits the smaller value wins. A key neither
//! source sets takes its default (see [`Key`]).
//!
//! Nothing here widens a grant silently: an unknown key under the prefix, a malformed value,
//! a relative path or a `..` is an error.

mod env;
mod error;
mod files;
mod network;
mod values;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::EnvFilter;
pub use error::PolicyError;
pub use files::{Files, Preopen};
pub use network::{Network, NetworkRules, PortRange, SocketUse, Subnet};
pub use values::{parse_bytes, parse_count, parse_duration, parse_listen_address};

/// Every key begins with this (annotations and image labels alike).
pub const ANNOTATION_PREFIX: &str = "wasmrunner.dev/";

/// The status a guest ends with when it passes its CPU deadline: 128 + SIGXCPU, as if the
/// kernel's `RLIMIT_CPU` had stopped it.
pub const CPU_DEADLINE_STATUS: i32 = 152;

/// One policy key. Its text after the prefix is [`Key::name`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Key {
    /// `files`: the directories the guest sees. `none`, or a comma-separated list of
    /// `PATH[=GUEST][:ro|:rw]`: PATH is an absolute path in the container's filesystem (the
    /// rootfs, with its mounted volumes), GUEST the path the guest opens it as (default:
    /// PATH), the mode read-only unless `:rw`. Default: `/:rw`, the whole rootfs.
    Files,
    /// `network`: `all` (the default), `none`, or a comma-separated list of
    /// `connect=ADDR[/BITS]:PORTS` (TCP connect and UDP send to those addresses),
    /// `listen=PORTS` (bind TCP and UDP on those ports) and `lookup` (resolve names). PORTS
    /// is `N`, `N-M` or `*`; an IPv6 ADDR is written in brackets. A denied socket call fails
    /// inside the guest with WASI's `access-denied`.
    Network,
    /// `env`: which of the container's variables the guest sees, as a comma-separated list of
    /// names, each exact or ending in `*` (a prefix); `none` for no variable. Default: `*`.
    Env,
    /// `memory`: the most linear memory one memory of the guest may grow to, in bytes (`Ki`,
    /// `Mi`, `Gi`, `K`, `M`, `G` suffixes). Default: the container's memory limit, so that
    /// `memory.grow` fails inside the guest before the cgroup kills it.
    Memory,
    /// `tables`: the most elements one table may hold. Default: the engine's.
    Tables,
    /// `instances`: the most module instances the guest may create. Default: the engine's.
    Instances,
    /// `cpu-deadline`: the CPU time the guest may use (`500ms`, `30s`, `5m`, `1h`); past it
    /// the guest is stopped with status [`CPU_DEADLINE_STATUS`]. Default: none. Only for a
    /// command: a served component's requests are bounded by [`Key::HttpTimeout`].
    CpuDeadline,
    /// `http-concurrency`: for a served `wasi:http` component, the most requests its guest
    /// handles at once; the others wait for a slot (within [`Key::HttpTimeout`]). Default:
    /// the engine's.
    HttpConcurrency,
    /// `http-timeout`: for a served `wasi:http` component, how long one request may take,
    /// from its arrival to the end of its response, waiting for a slot included; past it the
    /// guest's instance is stopped and the client gets a 503 (still waiting) or 504. Default:
    /// the engine's.
    HttpTimeout,
    /// `http-address`: where a served `wasi:http` component listens, `ADDRESS:PORT` or `PORT`
    /// (on `0.0.0.0`). The pod's annotation wins over the image's label, and either over the
    /// container's `WASMTIME_HTTP_PROXY_SOCKET_ADDR`. The port must still lie inside the
    /// network grant. Default: the engine's (`0.0.0.0:8080`).
    HttpAddress,
}

impl Key {
    pub const ALL: [Key; 10] = [
        Key::Files,
        Key::Network,
        Key::Env,
        Key::Memory,
        Key::Tables,
        Key::Instances,
        Key::CpuDeadline,
        Key::HttpConcurrency,
        Key::HttpTimeout,
        Key::HttpAddress,
    ];

    /// The key's name after [`ANNOTATION_PREFIX`].
    pub fn name(self) -> &'static str {
        match self {
            Key::Files => "files",
            Key::Network => "network",
            Key::Env => "env",
            Key::Memory => "memory",
            Key::Tables => "tables",
            Key::Instances => "instances",
            Key::CpuDeadline => "cpu-deadline",
            Key::HttpConcurrency => "http-concurrency",
            Key::HttpTimeout => "http-timeout",
            Key::HttpAddress => "http-address",
        }
    }

    /// The whole annotation name, prefix included.
    pub fn annotation(self) -> String {
        format!("{ANNOTATION_PREFIX}{}", self.name())
    }

    fn from_name(name: &str) -> Option<Key> {
        Key::ALL.into_iter().find(|key| key.name() == name)
    }
}

/// Who said something about a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The container's annotations: what the pod grants.
    Grant,
    /// The image's labels or annotations: what the module declares it needs.
    Image,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Grant => "the container's annotations",
            Origin::Image => "the image's labels",
        })
    }
}

/// What one source says: each key it sets, parsed; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Statement {
    pub files: Option<Files>,
    pub network: Option<Network>,
    pub env: Option<EnvFilter>,
    pub memory: Option<u64>,
    pub tables: Option<u32>,
    pub instances: Option<u32>,
    pub cpu_deadline: Option<Duration>,
    pub http_concurrency: Option<u32>,
    pub http_timeout: Option<Duration>,
    pub http_address: Option<std::net::SocketAddr>,
}

impl Statement {
    /// Reads the keys under [`ANNOTATION_PREFIX`] from `entries` (annotations or labels);
    /// other names are not ours and are passed over.
    pub fn parse<'a>(
        origin: Origin,
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, PolicyError> {
        let mut statement = Statement::default();
        for (name, value) in entries {
            let Some(short) = name.strip_prefix(ANNOTATION_PREFIX) else {
                continue;
            };
            let key = Key::from_name(short).ok_or_else(|| PolicyError::UnknownKey {
                name: name.to_string(),
                origin,
            })?;
            let malformed = |reason: String| PolicyError::Malformed {
                key,
                value: value.to_string(),
                origin,
                reason,
            };
            let value = value.trim();
            match key {
                Key::Files => statement.files = Some(Files::parse(value).map_err(malformed)?),
                Key::Network => statement.network = Some(Network::parse(value).map_err(malformed)?),
                Key::Env => statement.env = Some(EnvFilter::parse(value).map_err(malformed)?),
                Key::Memory => statement.memory = Some(parse_bytes(value).map_err(malformed)?),
                Key::Tables => statement.tables = Some(parse_count(value).map_err(malformed)?),
                Key::Instances => {
                    statement.instances = Some(parse_count(value).map_err(malformed)?)
                }
                Key::CpuDeadline => {
                    statement.cpu_deadline = Some(parse_duration(value).map_err(malformed)?)
                }
                Key::HttpConcurrency => {
                    statement.http_concurrency = Some(parse_count(value).map_err(malformed)?)
                }
                Key::HttpTimeout => {
                    statement.http_timeout = Some(parse_duration(value).map_err(malformed)?)
                }
                Key::HttpAddress => {
                    statement.http_address = Some(parse_listen_address(value).map_err(malformed)?)
                }
            }
        }
        Ok(statement)
    }
}

/// What the guest gets, every key decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub files: Files,
    pub network: Network,
    pub env: EnvFilter,
    /// The most bytes one linear memory may grow to; `None`: the engine's own bound.
    pub memory: Option<u64>,
    pub tables: Option<u32>,
    pub instances: Option<u32>,
    pub cpu_deadline: Option<Duration>,
    /// The most requests a served component handles at once; `None`: the engine's default.
    pub http_concurrency: Option<u32>,
    /// How long one served request may take; `None`: the engine's default.
    pub http_timeout: Option<Duration>,
    /// Where a served component listens; `None`: the container's variable or the default.
    pub http_address: Option<std::net::SocketAddr>,
}

impl Default for Capabilities {
    /// What a guest gets when nobody says anything: the rootfs read-write, the network, every
    /// variable, and the engine's own limits.
    fn default() -> Self {
        Self {
            files: Files::whole_rootfs(),
            network: Network::All,
            env: EnvFilter::all(),
            memory: None,
            tables: None,
            instances: None,
            cpu_deadline: None,
            http_concurrency: None,
            http_timeout: None,
            http_address: None,
        }
    }
}

impl Capabilities {
    /// [`Capabilities::memory`] in 64 KiB pages of linear memory, as engines count it: the
    /// most whole pages under the cap, at least 1 and at most the 65,536 a 32-bit memory has.
    pub fn memory_pages(&self) -> Option<u32> {
        const PAGE: u64 = 64 * 1024;
        self.memory.map(|bytes| {
            u32::try_from(bytes / PAGE)
                .unwrap_or(u32::MAX)
                .clamp(1, 65_536)
        })
    }

    /// The keys whose value is narrower than the default, which an engine must enforce or
    /// refuse. The memory limit counts only when one was set.
    pub fn restricted_keys(&self) -> Vec<Key> {
        let defaults = Capabilities::default();
        Key::ALL
            .into_iter()
            .filter(|key| match key {
                Key::Files => self.files != defaults.files,
                Key::Network => self.network != defaults.network,
                Key::Env => self.env != defaults.env,
                Key::Memory => self.memory.is_some(),
                Key::Tables => self.tables.is_some(),
                Key::Instances => self.instances.is_some(),
                Key::CpuDeadline => self.cpu_deadline.is_some(),
                Key::HttpConcurrency => self.http_concurrency.is_some(),
                Key::HttpTimeout => self.http_timeout.is_some(),
                Key::HttpAddress => self.http_address.is_some(),
            })
            .collect()
    }

    /// Refuses a policy with a key `engine` cannot enforce: a restriction an engine ignored
    /// would be a grant wider than the one written down.
    pub fn check_enforceable(&self, engine: &str, enforced: &[Key]) -> Result<(), PolicyError> {
        match self
            .restricted_keys()
            .into_iter()
            .find(|key| !enforced.contains(key))
        {
            Some(key) => Err(PolicyError::Unenforceable {
                engine: engine.to_string(),
                key,
            }),
            None => Ok(()),
        }
    }
}

/// Decides what the guest gets from the pod's `grant`, the image's `declared` needs and the
/// container's memory limit (`linux.resources.memory.limit`, when it has one).
pub fn resolve(
    grant: Statement,
    declared: Statement,
    container_memory_limit: Option<u64>,
) -> Result<Capabilities, PolicyError> {
    let defaults = Capabilities::default();
    let files = narrowed(
        Key::Files,
        grant.files.unwrap_or(defaults.files),
        declared.files,
    )?;
    let network = narrowed(
        Key::Network,
        grant.network.unwrap_or(defaults.network),
        declared.network,
    )?;
    let env = narrowed(Key::Env, grant.env.unwrap_or(defaults.env), declared.env)?;
    Ok(Capabilities {
        files,
        network,
        env,
        memory: smaller(grant.memory.or(container_memory_limit), declared.memory),
        tables: smaller(grant.tables, declared.tables),
        instances: smaller(grant.instances, declared.instances),
        cpu_deadline: smaller(grant.cpu_deadline, declared.cpu_deadline),
        http_concurrency: smaller(grant.http_concurrency, declared.http_concurrency),
        http_timeout: smaller(grant.http_timeout, declared.http_timeout),
        // A setting, not a reach: the pod says where it serves, else the image.
        http_address: grant.http_address.or(declared.http_address),
    })
}

/// A key whose grant is a set the image's declared need must lie inside.
trait Reach: std::fmt::Display {
    /// `Ok` when `need` lies inside `self`; else the first part that does not, as text.
    fn covers(&self, need: &Self) -> Result<(), String>;
}

impl Reach for Files {
    fn covers(&self, need: &Self) -> Result<(), String> {
        Files::covers(self, need)
    }
}

impl Reach for Network {
    fn covers(&self, need: &Self) -> Result<(), String> {
        Network::covers(self, need)
    }
}

impl Reach for EnvFilter {
    fn covers(&self, need: &Self) -> Result<(), String> {
        EnvFilter::covers(self, need)
    }
}

/// What the guest gets for `key`: the image's declared need when it lies inside the grant
/// (a refusal naming it when not), or the grant when the image declares nothing.
fn narrowed<T: Reach>(key: Key, granted: T, declared: Option<T>) -> Result<T, PolicyError> {
    let Some(need) = declared else {
        return Ok(granted);
    };
    granted
        .covers(&need)
        .map_err(|need| PolicyError::NotGranted {
            key,
            need,
            granted: granted.to_string(),
        })?;
    Ok(need)
}

fn smaller<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(entries: &[(&str, &str)]) -> Result<Statement, PolicyError> {
        Statement::parse(Origin::Grant, entries.iter().copied())
    }

    fn image(entries: &[(&str, &str)]) -> Statement {
        Statement::parse(Origin::Image, entries.iter().copied()).expect("image statement")
    }

    #[test]
    fn nothing_said_is_the_default_and_other_annotations_are_not_ours() {
        let statement = grant(&[
            ("io.kubernetes.cri.sandbox-id", "x"),
            ("wasmrunner.device/files", "none"),
        ])
        .expect("statement");
        assert_eq!(statement, Statement::default());
        let caps = resolve(statement, Statement::default(), None).expect("caps");
        assert_eq!(caps, Capabilities::default());
        assert!(caps.restricted_keys().is_empty());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
        let err = grant(&[("wasmrunner.dev/filez", "/data")]).unwrap_err();
        assert!(err.to_string().contains("wasmrunner.dev/filez"), "{err}");
        let err = grant(&[("wasmrunner.dev/memory", "lots")]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("wasmrunner.dev/memory") && text.contains("lots"),
            "{text}"
        );
        for (key, value) in [
            ("wasmrunner.dev/files", "data"),
            ("wasmrunner.dev/files", "/data/../etc"),
            ("wasmrunner.dev/files", "/data:rx"),
            ("wasmrunner.dev/network", "connect=300.0.0.1:80"),
            ("wasmrunner.dev/network", "connect=10.0.0.0/33:80"),
            ("wasmrunner.dev/network", "listen=80-70"),
            ("wasmrunner.dev/network", "everything"),
            ("wasmrunner.dev/env", "A=B"),
            ("wasmrunner.dev/env", "*FOO"),
            ("wasmrunner.dev/tables", "-1"),
            ("wasmrunner.dev/cpu-deadline", "10"),
            ("wasmrunner.dev/cpu-deadline", "0s"),
            ("wasmrunner.dev/http-concurrency", "0"),
            ("wasmrunner.dev/http-timeout", "soon"),
            ("wasmrunner.dev/http-address", "localhost:80"),
            ("wasmrunner.dev/http-address", "0"),
        ] {
            assert!(
                grant(&[(key, value)]).is_err(),
                "{key}={value} was accepted"
            );
        }
    }

    #[test]
    fn the_container_memory_limit_is_the_default_cap_and_the_smaller_limit_wins() {
        let caps = resolve(Statement::default(), Statement::default(), Some(64 << 20)).unwrap();
        assert_eq!(caps.memory, Some(64 << 20));
        assert_eq!(caps.restricted_keys(), vec![Key::Memory]);
        let pod = grant(&[
            ("wasmrunner.dev/memory", "32Mi"),
            ("wasmrunner.dev/cpu-deadline", "2s"),
        ])
        .unwrap();
        let declared = image(&[
            ("wasmrunner.dev/memory", "16Mi"),
            ("wasmrunner.dev/cpu-deadline", "5s"),
            ("wasmrunner.dev/instances", "3"),
            ("wasmrunner.dev/http-concurrency", "8"),
            ("wasmrunner.dev/http-timeout", "30s"),
        ]);
        let caps = resolve(pod, declared, Some(64 << 20)).unwrap();
        assert_eq!(caps.memory, Some(16 << 20));
        assert_eq!(caps.cpu_deadline, Some(Duration::from_secs(2)));
        assert_eq!(caps.instances, Some(3));
        assert_eq!(caps.http_concurrency, Some(8));
        assert_eq!(caps.http_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn the_pods_http_address_wins_over_the_images() {
        let declared = image(&[("wasmrunner.dev/http-address", "9000")]);
        let caps = resolve(Statement::default(), declared.clone(), None).unwrap();
        assert_eq!(caps.http_address, Some(([0, 0, 0, 0], 9000).into()));
        let pod = grant(&[("wasmrunner.dev/http-address", "127.0.0.1:8081")]).unwrap();
        let caps = resolve(pod, declared, None).unwrap();
        assert_eq!(caps.http_address, Some(([127, 0, 0, 1], 8081).into()));
        let v6 = grant(&[("wasmrunner.dev/http-address", "[::1]:8082")]).unwrap();
        assert_eq!(v6.http_address, Some("[::1]:8082".parse().unwrap()));
    }

    #[test]
    fn an_image_gets_what_it_declares_inside_the_grant() {
        let pod = grant(&[
            ("wasmrunner.dev/files", "/data:rw,/etc/app"),
            ("wasmrunner.dev/network", "connect=127.0.0.0/8:*,lookup"),
            ("wasmrunner.dev/env", "APP_*"),
        ])
        .unwrap();
        let declared = image(&[
            ("wasmrunner.dev/files", "/data/out:rw,/etc/app/conf=/conf"),
            ("wasmrunner.dev/network", "connect=127.0.0.1:8080"),
            ("wasmrunner.dev/env", "APP_NAME"),
        ]);
        let caps = resolve(pod, declared.clone(), None).expect("covered");
        assert_eq!(Some(caps.files), declared.files);
        assert_eq!(Some(caps.network), declared.network);
        assert_eq!(Some(caps.env), declared.env);
    }

    #[test]
    fn a_need_outside_the_grant_is_refused_naming_it() {
        let cases = [
            (
                ("wasmrunner.dev/files", "/data"),
                ("wasmrunner.dev/files", "/data:rw"),
            ),
            (
                ("wasmrunner.dev/files", "/data"),
                ("wasmrunner.dev/files", "/etc"),
            ),
            (
                ("wasmrunner.dev/files", "/data"),
                ("wasmrunner.dev/files", "/datum"),
            ),
            (
                ("wasmrunner.dev/network", "none"),
                ("wasmrunner.dev/network", "lookup"),
            ),
            (
                ("wasmrunner.dev/network", "connect=10.0.0.0/8:443"),
                ("wasmrunner.dev/network", "connect=10.0.0.1:80"),
            ),
            (
                ("wasmrunner.dev/network", "listen=8080"),
                ("wasmrunner.dev/network", "all"),
            ),
            (("wasmrunner.dev/env", "APP_*"), ("wasmrunner.dev/env", "*")),
            (
                ("wasmrunner.dev/env", "APP_NAME"),
                ("wasmrunner.dev/env", "APP_*"),
            ),
        ];
        for (granted, needed) in cases {
            let err = resolve(grant(&[granted]).unwrap(), image(&[needed]), None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, PolicyError::NotGranted { .. }) && text.contains(granted.0),
                "{granted:?} vs {needed:?}: {text}"
            );
        }
    }

    #[test]
    fn an_engine_refuses_what_it_cannot_enforce() {
        let caps = resolve(
            grant(&[("wasmrunner.dev/network", "none")]).unwrap(),
            Statement::default(),
            Some(1 << 30),
        )
        .unwrap();
        assert_eq!(caps.restricted_keys(), vec![Key::Network, Key::Memory]);
        let err = caps
            .check_enforceable("wasmedge", &[Key::Files, Key::Env, Key::Memory])
            .unwrap_err();
        assert!(err.to_string().contains("wasmrunner.dev/network"), "{err}");
        assert!(caps.check_enforceable("wasmtime", &Key::ALL).is_ok());
    }
}
