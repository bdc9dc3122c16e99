//! The Kubernetes manifests under deploy/ agree with the installer: one RuntimeClass per
//! shipped handler of the table, the example pod uses one, and the DaemonSet passes flags the
//! CLI has.

use std::path::Path;
use std::process::Command;

use wasmrunner_installer::RUNTIMES;

fn deploy_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn one_runtime_class_per_handler() {
    let yaml = deploy_file("runtimeclass.yaml");
    let classes: Vec<&str> = yaml.split("\n---\n").collect();
    let shipped: Vec<_> = RUNTIMES.iter().filter(|spec| spec.shipped).collect();
    assert_eq!(classes.len(), shipped.len(), "{yaml}");
    for spec in shipped {
        let class = classes
            .iter()
            .find(|c| c.contains(&format!("\n  name: {}\n", spec.handler)))
            .unwrap_or_else(|| panic!("no RuntimeClass named {}", spec.handler));
        assert!(class.contains("apiVersion: node.k8s.io/v1"), "{class}");
        assert!(class.contains("kind: RuntimeClass"), "{class}");
        assert!(
            class.contains(&format!("\nhandler: {}\n", spec.handler)),
            "{class}"
        );
        assert!(
            class.contains("wasmrunner.io/installed: \"true\""),
            "{class}"
        );
    }
}

#[test]
fn example_pod_uses_the_wasmtime_class() {
    let pod = deploy_file("examples/hello-pod.yaml");
    assert!(pod.contains("runtimeClassName: wasmtime"), "{pod}");
    assert!(
        pod.contains("image: registry.example/wasmrunner/hello:latest"),
        "{pod}"
    );
    assert!(
        pod.contains("limits:") && pod.contains("memory: 64Mi"),
        "{pod}"
    );
}

#[test]
fn daemonset_flags_exist() {
    let ds = deploy_file("installer/daemonset.yaml");
    assert!(ds.contains("namespace: kube-system"));
    assert!(ds.contains("hostPID: true"));
    assert!(ds.contains("privileged: true"));
    assert!(ds.contains("wasmrunner.io/installed: \"true\""));
    let help = Command::new(env!("CARGO_BIN_EXE_wasmrunner-installer"))
        .args(["install", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    let mut flags = 0;
    for line in ds.lines() {
        let arg = line.trim_start_matches([' ', '#']).trim();
        let Some(flag) = arg.strip_prefix("- --") else {
            continue;
        };
        let name = flag.split(['=', ' ']).next().unwrap_or_default();
        assert!(
            help.contains(&format!("--{name}")),
            "the CLI has no --{name}"
        );
        flags += 1;
    }
    assert!(flags >= 4, "expected the install flags in the DaemonSet");
    assert!(ds.contains("- install\n"));
}
