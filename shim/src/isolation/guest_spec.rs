//! The OCI spec a Wasm workload's container is built from: the bundle's own, hardened.

use std::collections::HashSet;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxCapabilities, LinuxCapabilitiesBuilder, Spec};

use super::IsolationError;

/// Directories a guest never sees: each gets an empty read-only tmpfs over it once
/// libcontainer has set the container up (its own `/dev/null`, device nodes and `/proc`
/// work are done by then). The mounts beneath stay in the mount namespace but cannot be
/// reached by any path, and without `CAP_SYS_ADMIN` nothing in the container can unmount the
/// mask.
pub const MASKED_FOR_GUESTS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// Where in containerd's bundle the hardened spec is written: containerd removes the bundle,
/// and this with it, when the task is deleted.
const GUEST_BUNDLE_DIR: &str = "wasmrunner-guest";

/// The bundle's spec as a Wasm workload gets it:
/// - no capability in any set (the bounding set too, so nothing regains one), and
///   `no_new_privs`;
/// - [`MASKED_FOR_GUESTS`] masked;
/// - the rootfs named by its absolute path (the hardened spec lives in another directory);
/// - no supplementary groups for libcontainer to set: it reads `/proc/self/setgroups` to
///   set them, after the masks are in place, and fails there. The builder sets them on
///   itself instead, and the init process inherits them ([`GuestBundle::groups`]).
///
/// Everything else (user, namespaces, cgroups and limits, mounts, the pod's seccomp profile,
/// hooks) is the bundle's.
pub fn harden(bundle: &Path, spec: &Spec) -> Result<Spec, IsolationError> {
    let mut spec = spec.clone();
    let mut root = spec.root().clone().ok_or(IsolationError::NoRoot)?;
    if root.path().is_relative() {
        root.set_path(bundle.join(root.path()));
    }
    spec.set_root(Some(root));

    let mut process = spec.process().clone().unwrap_or_default();
    let mut user = process.user().clone();
    user.set_additional_gids(None);
    process.set_user(user);
    process.set_no_new_privileges(Some(true));
    process.set_capabilities(Some(no_capabilities()?));
    spec.set_process(Some(process));

    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut masked = linux.masked_paths().clone().unwrap_or_default();
    for path in MASKED_FOR_GUESTS {
        if !masked.iter().any(|m| m == path) {
            masked.push(path.to_string());
        }
    }
    linux.set_masked_paths(Some(masked));
    spec.set_linux(Some(linux));
    Ok(spec)
}

fn no_capabilities() -> Result<LinuxCapabilities, IsolationError> {
    LinuxCapabilitiesBuilder::default()
        .bounding(HashSet::new())
        .effective(HashSet::new())
        .permitted(HashSet::new())
        .inheritable(HashSet::new())
        .ambient(HashSet::new())
        .build()
        .map_err(|e| IsolationError::Spec(e.to_string()))
}

/// What a Wasm workload's container is built from.
#[derive(Debug)]
pub struct GuestBundle {
    /// Holds [`harden`]'s `config.json`; libcontainer builds the container from it.
    pub dir: PathBuf,
    /// The spec's supplementary groups (none if it names none).
    pub groups: Vec<u32>,
}

/// Writes [`harden`]'s spec into a directory of the bundle (readable by root only).
pub fn write_guest_bundle(bundle: &Path, spec: &Spec) -> Result<GuestBundle, IsolationError> {
    let hardened = harden(bundle, spec)?;
    let dir = bundle.join(GUEST_BUNDLE_DIR);
    let path = dir.join("config.json");
    let write_error = |source| IsolationError::WriteSpec {
        path: path.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(write_error)?;
    let json = serde_json::to_vec(&hardened)
        .map_err(|e| write_error(std::io::Error::other(e.to_string())))?;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut file| std::io::Write::write_all(&mut file, &json))
        .map_err(write_error)?;
    let groups = spec
        .process()
        .as_ref()
        .and_then(|process| process.user().additional_gids().clone())
        .unwrap_or_default();
    Ok(GuestBundle { dir, groups })
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{
        Capability, LinuxBuilder, ProcessBuilder, RootBuilder, SpecBuilder, UserBuilder,
    };

    use super::*;

    fn bundle_spec() -> Spec {
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().expect("root"))
            .process(
                ProcessBuilder::default()
                    .args(vec!["/app.wasm".to_string()])
                    .user(
                        UserBuilder::default()
                            .uid(1000u32)
                            .gid(1000u32)
                            .additional_gids(vec![10u32, 20])
                            .build()
                            .expect("user"),
                    )
                    .capabilities(
                        LinuxCapabilitiesBuilder::default()
                            .bounding(HashSet::from([Capability::NetRaw, Capability::Chown]))
                            .effective(HashSet::from([Capability::NetRaw]))
                            .build()
                            .expect("caps"),
                    )
                    .build()
                    .expect("process"),
            )
            .linux(
                LinuxBuilder::default()
                    .masked_paths(vec!["/proc/kcore".to_string(), "/sys".to_string()])
                    .build()
                    .expect("linux"),
            )
            .build()
            .expect("spec")
    }

    #[test]
    fn guests_lose_every_capability_and_gain_no_new_privileges() {
        let spec = harden(Path::new("/b"), &bundle_spec()).expect("harden");
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.no_new_privileges(), Some(true));
        let caps = process.capabilities().as_ref().expect("caps");
        for set in [
            caps.bounding(),
            caps.effective(),
            caps.permitted(),
            caps.inheritable(),
            caps.ambient(),
        ] {
            assert_eq!(set.as_ref().map(HashSet::len), Some(0), "{caps:?}");
        }
        // The user is the spec's; its groups are the builder's to set.
        assert_eq!(process.user().uid(), 1000);
        assert_eq!(process.user().additional_gids(), &None);
        assert_eq!(
            process.args().as_deref(),
            Some(&["/app.wasm".to_string()][..])
        );
    }

    #[test]
    fn proc_sys_and_dev_are_masked_once_and_the_pods_masks_kept() {
        let spec = harden(Path::new("/b"), &bundle_spec()).expect("harden");
        let masked = spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().clone())
            .expect("masked paths");
        assert_eq!(masked, ["/proc/kcore", "/sys", "/proc", "/dev"]);
    }

    #[test]
    fn the_rootfs_is_named_by_its_bundle_path() {
        let spec = harden(Path::new("/run/b"), &bundle_spec()).expect("harden");
        assert_eq!(
            spec.root().as_ref().map(|r| r.path().clone()),
            Some(PathBuf::from("/run/b/rootfs"))
        );
    }

    #[test]
    fn the_guest_bundle_is_written_beside_the_bundles_config() {
        let bundle = tempfile::tempdir().expect("tempdir");
        let GuestBundle { dir, groups } =
            write_guest_bundle(bundle.path(), &bundle_spec()).expect("write");
        assert!(dir.starts_with(bundle.path()));
        assert_eq!(groups, [10, 20]);
        let written = Spec::load(dir.join("config.json")).expect("load");
        assert_eq!(
            written
                .process()
                .as_ref()
                .and_then(|p| p.no_new_privileges()),
            Some(true)
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("config.json"))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the guest spec is root's only: {mode:o}");
    }
}
