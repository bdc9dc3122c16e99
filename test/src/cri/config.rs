//! The private containerd's config with the CRI plugin on, as this VM needs it (see
//! `shared/ENVIRONMENT.md`): `restrict_oom_score_adj` (no CAP_SYS_RESOURCE here), a locally
//! built sandbox (pause) image, CNI from Debian's `containernetworking-plugins` with a bridge
//! network private to the run, network namespaces under containerd's state dir, NRI off (its
//! socket path is global), and the runtime handlers: `runc` written here as the baseline, one
//! per engine under test added by the node installer (`wasmrunner_installer`), which makes
//! every run of the suite an end-to-end test of the installer as well.
//!
//! | containerd | config | CRI tables |
//! |---|---|---|
//! | 1.6, 1.7 | `version = 2` | `plugins."io.containerd.grpc.v1.cri"`: `sandbox_image`, `cni`, `containerd.runtimes` |
//! | 2.x | `version = 3` | `plugins."io.containerd.cri.v1.images".pinned_images.sandbox`; `plugins."io.containerd.cri.v1.runtime"`: `cni`, `containerd.runtimes` |

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use wasmrunner_installer::{Options, install_into_config, runtimes};

use crate::containerd::ContainerdVersion;
use crate::engine::Engine;
use crate::images::TestImage;

/// Where Debian's `containernetworking-plugins` installs the CNI plugins.
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// The CRI plugin's containerd namespace.
pub const K8S_NAMESPACE: &str = "k8s.io";
/// The baseline runtime handler.
pub const RUNC_HANDLER: &str = "runc";
/// The CRI registry's `config_path`, beside the config file: one `<host:port>/hosts.toml` each.
pub const REGISTRY_HOSTS_DIR: &str = "certs.d";

/// What one run's CRI plugin is set up with; everything that could clash with another run
/// (bridge, subnet, cgroups, files) is named after the harness's pid.
#[derive(Debug, Clone)]
pub struct CriSettings {
    /// The pod sandbox image (imported into `k8s.io` before the first pod).
    pub sandbox_image: String,
    pub cni_conf_dir: PathBuf,
    /// The CNI network's name and the Linux bridge it creates.
    pub network: String,
    pub bridge: String,
    /// The pods' subnet: `10.88.<octet>.0/24`.
    pub subnet_octet: u8,
    /// host-local's allocation records.
    pub ipam_dir: PathBuf,
    /// The kubelet-like root of this run: pod log dirs, `etc-hosts` and termination logs.
    pub kubelet_dir: PathBuf,
    /// kubelet's `--cgroup-root`: pods go in `<root>/kubepods/<qos>/pod<uid>`.
    pub cgroup_root: String,
}

impl CriSettings {
    pub fn new(scratch: &Path) -> Self {
        let pid = std::process::id();
        Self {
            sandbox_image: TestImage::Pause.name(),
            cni_conf_dir: scratch.join("cni/net.d"),
            network: format!("wasmrunner-e2e-{pid}"),
            // Interface names have at most 15 bytes; pids at most 7 digits.
            bridge: format!("wre2e{pid}"),
            subnet_octet: (pid % 250) as u8,
            ipam_dir: scratch.join("cni/ipam"),
            kubelet_dir: scratch.join("kubelet"),
            cgroup_root: format!("/wasmrunner-e2e-cri-{pid}"),
        }
    }

    /// The pods' subnet in CIDR notation.
    pub fn subnet(&self) -> String {
        format!("10.88.{}.0/24", self.subnet_octet)
    }

    /// Whether `ip` is a pod address of this run's network.
    pub fn in_subnet(&self, ip: &str) -> bool {
        let octets: Vec<&str> = ip.split('.').collect();
        let octet = self.subnet_octet.to_string();
        octets.len() == 4
            && octets[..3] == ["10", "88", octet.as_str()]
            && octets[3].parse::<u8>().is_ok_and(|host| host > 0)
    }

    /// The node's own address on the pods' bridge (see [`CriSettings::reach_pods_from_node`]),
    /// outside the range pods get theirs from.
    pub fn node_address(&self) -> String {
        format!("10.88.{}.254/24", self.subnet_octet)
    }

    /// Gives the node an address on the pods' bridge, so that it reaches pod IPs as kubelet's
    /// probes and a Service do (the bridge has no gateway: see [`CriSettings::conflist`]).
    /// Call it once a pod has made the bridge; calling it again changes nothing.
    pub fn reach_pods_from_node(&self) -> Result<()> {
        let address = self.node_address();
        for args in [
            vec![
                "addr",
                "replace",
                address.as_str(),
                "dev",
                self.bridge.as_str(),
            ],
            vec!["link", "set", self.bridge.as_str(), "up"],
        ] {
            let status = std::process::Command::new("ip")
                .args(&args)
                .status()
                .with_context(|| format!("running ip {}", args.join(" ")))?;
            anyhow::ensure!(status.success(), "ip {} failed: {status}", args.join(" "));
        }
        Ok(())
    }

    /// The bridge network's conflist: bridge with host-local addresses (up to `.250`: `.254`
    /// is the node's, see [`CriSettings::node_address`]), no masquerading, no gateway (so the
    /// host's forwarding setting is left alone). The loopback interface is brought up by
    /// containerd itself, with the `loopback` plugin from the same bin dir.
    pub fn conflist(&self) -> String {
        let conf = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.network,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                "isGateway": false,
                "ipMasq": false,
                "hairpinMode": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": self.ipam_dir,
                    "ranges": [[{
                        "subnet": self.subnet(),
                        "rangeEnd": format!("10.88.{}.250", self.subnet_octet),
                    }]],
                },
            }],
        });
        format!("{conf:#}\n")
    }

    /// Writes the CNI config into its conf dir.
    pub fn write_cni_config(&self) -> Result<()> {
        std::fs::create_dir_all(&self.cni_conf_dir)
            .with_context(|| format!("creating {}", self.cni_conf_dir.display()))?;
        let path = self.cni_conf_dir.join("10-wasmrunner-e2e.conflist");
        std::fs::write(&path, self.conflist())
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// A TOML basic string (JSON's escapes are a subset of TOML's).
fn quote(text: &str) -> String {
    serde_json::Value::String(text.to_string()).to_string()
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// The config file a private containerd under `root` starts with, before the installer adds
/// the wasm runtime handlers.
/// containerd's log level; at `Debug` it starts shims with `-debug`, so they log at debug too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Info,
    Debug,
}

impl LogLevel {
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
        }
    }
}

pub fn containerd_config(
    root: &Path,
    version: ContainerdVersion,
    cri: &CriSettings,
    log_level: LogLevel,
) -> String {
    let header = format!(
        r#"version = {config_version}
root = {root_dir}
state = {state_dir}

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "{log_level}"
"#,
        log_level = log_level.name(),
        config_version = version.config_version(),
        root_dir = quote_path(&root.join("root")),
        state_dir = quote_path(&root.join("state")),
        socket = quote_path(&root.join("containerd.sock")),
        ttrpc = quote_path(&root.join("containerd.sock.ttrpc")),
    );
    let sandbox = quote(&cri.sandbox_image);
    let conf_dir = quote_path(&cri.cni_conf_dir);
    let bin_dir = quote(CNI_BIN_DIR);
    let plugins = if version.major >= 2 {
        // 2.1 reads a list of plugin dirs (its `bin_dir` is deprecated); 2.0 only `bin_dir`.
        let bin_dirs = if version.minor >= 1 {
            format!("bin_dirs = [{bin_dir}]")
        } else {
            format!("bin_dir = {bin_dir}")
        };
        format!(
            r#"
[plugins]
  [plugins."io.containerd.cri.v1.images"]
    [plugins."io.containerd.cri.v1.images".pinned_images]
      sandbox = {sandbox}

  [plugins."io.containerd.cri.v1.runtime"]
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true

    [plugins."io.containerd.cri.v1.runtime".cni]
      {bin_dirs}
      conf_dir = {conf_dir}

    [plugins."io.containerd.cri.v1.runtime".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
          SystemdCgroup = false

  [plugins."io.containerd.nri.v1.nri"]
    disable = true
"#
        )
    } else {
        // NRI exists from 1.7 on (off by default there; said again for clarity).
        let nri = if version.minor >= 7 {
            "\n  [plugins.\"io.containerd.nri.v1.nri\"]\n    disable = true\n"
        } else {
            ""
        };
        format!(
            r#"
[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = {sandbox}
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true

    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = {bin_dir}
      conf_dir = {conf_dir}

    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
{nri}"#
        )
    };
    format!("{header}{plugins}")
}

/// Adds one CRI runtime handler per engine to the config at `path` with the node installer's
/// library, and checks that it did. Returns the installer's action lines.
pub fn install_runtime_handlers(
    path: &Path,
    version: ContainerdVersion,
    engines: &[Engine],
) -> Result<Vec<String>> {
    let mut names: Vec<&str> = engines.iter().map(|e| e.name.as_str()).collect();
    names.dedup();
    let specs = runtimes::select(&names).context("choosing the installer's runtime handlers")?;
    let mut options = Options::with_runtimes(&specs);
    // The registry area writes a hosts.toml per registry it starts here (see
    // `crate::registry::hosts_dir`).
    options.registry_config_path = path.parent().map(|root| root.join(REGISTRY_HOSTS_DIR));
    options.containerd_version = Some(
        version
            .to_string()
            .parse()
            .with_context(|| format!("containerd version {version} for the installer"))?,
    );
    let report = install_into_config(path, &options)
        .with_context(|| format!("installing the runtime handlers into {}", path.display()))?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading {} after the install", path.display()))?;
    for spec in &specs {
        ensure!(
            report
                .actions
                .iter()
                .any(|a| a.starts_with(&format!("add runtime `{}`", spec.handler))),
            "the installer did not add handler {} to {}: {:?}",
            spec.handler,
            path.display(),
            report.actions
        );
        ensure!(
            text.contains(&format!("runtimes.{}]", spec.handler))
                && text.contains(spec.runtime_type),
            "{} lacks the {} handler after the install:\n{text}",
            path.display(),
            spec.handler
        );
    }
    Ok(report.actions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> Result<ContainerdVersion> {
        ContainerdVersion::parse(&format!(
            "containerd github.com/containerd/containerd {text}"
        ))
    }

    #[test]
    fn each_release_gets_its_own_config_format() -> Result<()> {
        let root = Path::new("/tmp/e2e \"x\"");
        let cri = CriSettings::new(root);
        let v16 = containerd_config(root, version("1.6.20")?, &cri, LogLevel::Info);
        assert!(v16.starts_with("version = 2\n"));
        assert!(v16.contains("sandbox_image = \"docker.io/wasmrunner/test:pause\""));
        assert!(v16.contains("bin_dir = \"/usr/lib/cni\""));
        assert!(v16.contains(r#"root = "/tmp/e2e \"x\"/root""#));
        assert!(!v16.contains("nri"));
        let v17 = containerd_config(root, version("1.7.24")?, &cri, LogLevel::Info);
        assert!(v17.contains("io.containerd.nri.v1.nri"));
        let v21 = containerd_config(root, version("2.1.9")?, &cri, LogLevel::Info);
        assert!(v21.starts_with("version = 3\n"));
        assert!(v21.contains("[plugins.\"io.containerd.cri.v1.images\".pinned_images]"));
        assert!(v21.contains("bin_dirs = [\"/usr/lib/cni\"]"));
        let v20 = containerd_config(root, version("2.0.5")?, &cri, LogLevel::Info);
        assert!(v20.contains("bin_dir = \"/usr/lib/cni\""));
        for text in [v16, v17, v21, v20] {
            assert!(text.contains("restrict_oom_score_adj = true"));
            assert!(text.contains("runtime_type = \"io.containerd.runc.v2\""));
        }
        Ok(())
    }

    #[test]
    fn the_subnet_is_recognised() {
        let mut cri = CriSettings::new(Path::new("/tmp"));
        cri.subnet_octet = 7;
        assert_eq!(cri.subnet(), "10.88.7.0/24");
        assert!(cri.in_subnet("10.88.7.2"));
        assert!(!cri.in_subnet("10.88.8.2"));
        assert!(!cri.in_subnet("10.88.7.0"));
        assert!(!cri.in_subnet("10.88.7"));
    }
}
