//! The Kubernetes path, tested at the CRI level: the calls kubelet makes to containerd's CRI
//! plugin for pods whose RuntimeClass handler is a wasmrunner shim (`wasmtime`), with `runc`
//! as the baseline. No kubelet can run here, so the suite is kubelet: [`pod::Pod`] makes
//! its calls in its order, with the configs it sends.
//!
//! - [`config`]: the private containerd's CRI config per containerd release, the CNI bridge
//!   network, and the runtime handlers (added with the node installer's library);
//! - [`client`]: a blocking CRI client over containerd's unix socket;
//! - [`pod`]: pods and containers, CRI logs, the teardown and its leak checks.

pub mod client;
pub mod config;
pub mod pod;

use std::path::Path;
use std::process::Command;

use crate::command::run_command;
use crate::containerd::Containerd;
use crate::leaks::remove_cgroup;

pub use client::CriClient;
pub use config::{CriSettings, K8S_NAMESPACE, RUNC_HANDLER};
pub use pod::{ContainerSpec, Network, Pod, PodSpec};

/// After the suite: removes the pods a failed case left (and names them), the run's cgroup
/// root, and the run's CNI bridge. Returns what had to be cleaned up that a clean run leaves
/// no trace of (leftover pods, cgroups that could not be removed).
pub fn clean_up_after_suite(containerd: &Containerd) -> Vec<String> {
    let mut left = Vec::new();
    match CriClient::connect(&containerd.socket()) {
        Ok(client) => match client.list_pod_sandboxes() {
            Ok(pods) => {
                for pod in pods {
                    let name = pod.metadata.map(|m| m.name).unwrap_or_default();
                    left.push(format!("pod {name} ({})", pod.id));
                    let _ = client.stop_pod_sandbox(&pod.id);
                    let _ = client.remove_pod_sandbox(&pod.id);
                }
            }
            Err(e) => left.push(format!("cannot list pods: {e:#}")),
        },
        Err(e) => left.push(format!("cannot connect to CRI: {e:#}")),
    }
    left.extend(remove_cgroup(&containerd.cri.cgroup_root));
    // The bridge plugin creates the bridge and leaves it when the last pod goes.
    let bridge = &containerd.cri.bridge;
    if Path::new("/sys/class/net").join(bridge).exists() {
        match run_command(Command::new("ip").args(["link", "delete", bridge.as_str()])) {
            Ok(outcome) if outcome.success() => {}
            Ok(outcome) => left.push(format!("cannot delete bridge {bridge}: {outcome}")),
            Err(e) => left.push(format!("cannot delete bridge {bridge}: {e:#}")),
        }
    }
    left
}
