//! The engine-independent half of running a workload: finding the entrypoint in the rootfs
//! or the image's wasm layers, telling modules, components and precompiled code apart, and
//! turning the OCI process args and env into what a WASI context takes.

use std::borrow::Cow;
use std::fs::File;
use std::path::PathBuf;

use containerd_shim_wasm::sandbox::context::{RuntimeContext, Source, WasmBinaryType, WasmLayer};
use wasmrunner_capabilities::{Capabilities, Key};

use crate::entrypoint::{DEFAULT_PATH, candidates as entrypoint_candidates, path_of};
use crate::failure::WorkloadError;
use crate::milestones::{Milestone, Milestones};
use crate::module_cache::OfferedCode;

/// The export a WASI command runs when the entrypoint names no function.
pub const DEFAULT_FUNCTION: &str = "_start";

/// The container variable that says where a served `wasi:http` component listens
/// (`ADDRESS:PORT`), runwasi's name for it, so images move over unchanged. It is the
/// runtime's setting, not the guest's: it is taken out of the guest's environment.
pub const HTTP_ADDRESS_ENV: &str = "WASMTIME_HTTP_PROXY_SOCKET_ADDR";

/// What kind of code the workload's bytes hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    /// A core WebAssembly module (WASI preview 1).
    Module,
    /// A WebAssembly component (WASI preview 2, `wasi:cli/run`).
    Component,
    /// Code this engine compiled earlier and the shim cached in containerd's content store.
    Precompiled,
}

/// A workload ready to hand to an engine.
#[derive(Debug)]
pub struct Workload<'a> {
    /// How the workload is named in messages: the entrypoint path, or the image layer.
    pub name: String,
    /// The module, component or precompiled bytes.
    pub bytes: Cow<'a, [u8]>,
    pub kind: WorkloadKind,
    /// The function to call: `_start` unless the entrypoint says `path#function`.
    pub function: String,
    /// argv as the guest sees it: the entrypoint path (without `#function`) and the rest.
    pub args: Vec<String>,
    /// Environment as `(name, value)` pairs.
    pub env: Vec<(String, String)>,
    /// This engine's code for `bytes`, compiled once per node and kept in a file: an engine
    /// that maps it (for example Wasmtime's `Module::deserialize_open_file`) neither compiles
    /// nor copies the code. For a `Precompiled` layer the file *is* the code, and `bytes` is
    /// then empty (the shim did not send them).
    pub compiled: Option<File>,
    /// What the guest may touch (`wasmrunner_capabilities`): the engine preopens
    /// `capabilities.files`, enforces the network and limits; `env` is already filtered.
    pub capabilities: Capabilities,
    /// Where to serve the workload if it is a `wasi:http` component: the container's
    /// [`HTTP_ADDRESS_ENV`], when set.
    pub http_address: Option<String>,
    /// Tells the shim when the guest got going, when the task is traced.
    pub milestones: Milestones,
}

impl Workload<'static> {
    /// The module at `path` on the host, run outside any container with `args` after its
    /// name, no environment and the default capabilities (see [`crate::run_on_host`]).
    pub fn on_host(path: &str, args: &[String]) -> Result<Self, WorkloadError> {
        let bytes = std::fs::read(path).map_err(|e| WorkloadError::Load {
            what: path.to_string(),
            reason: e.to_string(),
        })?;
        let kind = classify(path, &bytes)?;
        Ok(Workload {
            name: path.to_string(),
            bytes: Cow::Owned(bytes),
            kind,
            function: DEFAULT_FUNCTION.to_string(),
            args: std::iter::once(path.to_string())
                .chain(args.iter().cloned())
                .collect(),
            env: Vec::new(),
            compiled: None,
            capabilities: Capabilities::default(),
            http_address: None,
            milestones: Milestones::default(),
        })
    }
}

impl<'a> Workload<'a> {
    /// Reads the workload of the container whose context is `ctx`, with the node cache's
    /// `offered` code for it and the `capabilities` the shim resolved. Runs inside the
    /// container, after the rootfs became `/`.
    pub fn load(
        ctx: &'a impl RuntimeContext,
        offered: Option<OfferedCode>,
        capabilities: Capabilities,
        milestones: Milestones,
    ) -> Result<Self, WorkloadError> {
        check_preopens(&capabilities)?;
        let entrypoint = ctx.entrypoint();
        let mut env = split_env(ctx.envs());
        let http_address = env
            .iter()
            .position(|(name, _)| name == HTTP_ADDRESS_ENV)
            .map(|at| env.remove(at).1);
        let mut args = ctx.args().to_vec();
        let path = args
            .first()
            .map(|arg0| path_of(arg0).to_string())
            .unwrap_or_default();
        if let Some(arg0) = args.first_mut() {
            arg0.clone_from(&path);
        }

        let (name, bytes, precompiled) = match entrypoint.source {
            Source::File(_) => {
                let file = resolve_entrypoint(&path, &env)?;
                let bytes = std::fs::read(&file).map_err(|e| WorkloadError::Load {
                    what: path.clone(),
                    reason: e.to_string(),
                })?;
                (path.clone(), Cow::Owned(bytes), false)
            }
            Source::Oci(layers) => {
                let layer = single_layer(layers)?;
                let name = format!("image layer {}", layer.config.digest());
                (
                    name,
                    Cow::Borrowed(layer.layer.as_slice()),
                    layer.precompiled,
                )
            }
        };
        let kind = if precompiled {
            WorkloadKind::Precompiled
        } else {
            classify(&name, &bytes)?
        };
        let compiled = offered.and_then(|offered| match entrypoint.source {
            Source::File(_) => offered.for_module(&bytes),
            // The shim wrote a precompiled layer's code to the node cache instead of sending it.
            Source::Oci(_) if precompiled => Some(offered.for_layer()),
            Source::Oci(_) => None,
        });
        // The entrypoint was looked up with the container's whole `PATH`; the guest sees only
        // the variables its policy lets through.
        let env = env
            .into_iter()
            .filter(|(name, _)| capabilities.env.allows(name))
            .collect();
        Ok(Self {
            name,
            bytes,
            kind,
            function: entrypoint.func,
            args,
            env,
            compiled,
            capabilities,
            http_address,
            milestones,
        })
    }

    /// An engine calls this once the guest is instantiated, just before its first
    /// instruction runs (a server: before it takes its first request). The loader's freed
    /// memory goes back to the system, and the shim learns the moment, when it traces.
    pub fn ready_to_run(&self) {
        crate::memory::release_loader_memory();
        self.milestones.mark(Milestone::Running);
    }
}

/// Tells a module from a component; anything else is [`WorkloadError::NotWasm`].
pub fn classify(name: &str, bytes: &[u8]) -> Result<WorkloadKind, WorkloadError> {
    match WasmBinaryType::from_bytes(bytes) {
        Some(WasmBinaryType::Module) => Ok(WorkloadKind::Module),
        Some(WasmBinaryType::Component) => Ok(WorkloadKind::Component),
        None => Err(WorkloadError::NotWasm {
            what: name.to_string(),
            reason: describe_header(bytes),
        }),
    }
}

/// Why `bytes` are neither a module nor a component, from their first 8 bytes: what a user
/// can check with `xxd` against the header every wasm binary starts with (`00 61 73 6d`, then
/// the version).
fn describe_header(bytes: &[u8]) -> String {
    const MAGIC: &[u8] = b"\0asm";
    const HEADER: usize = 8;
    let hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    if bytes.is_empty() {
        return "the file is empty".to_string();
    }
    if bytes.len() < HEADER && MAGIC.starts_with(&bytes[..bytes.len().min(MAGIC.len())]) {
        return format!(
            "it ends after {} bytes [{}], inside the {HEADER}-byte wasm header",
            bytes.len(),
            hex(bytes)
        );
    }
    if bytes.starts_with(MAGIC) {
        return format!(
            "it has the wasm magic number but version bytes [{}]; a core module has \
             01 00 00 00 and a component 0d 00 01 00",
            hex(&bytes[MAGIC.len()..HEADER])
        );
    }
    format!(
        "it starts with bytes [{}], not the wasm header 00 61 73 6d",
        hex(&bytes[..bytes.len().min(HEADER)])
    )
}

fn single_layer(layers: &[WasmLayer]) -> Result<&WasmLayer, WorkloadError> {
    match layers {
        [layer] => Ok(layer),
        _ => Err(WorkloadError::Unsupported(format!(
            "the image has {} wasm layers; wasmrunner runs images with exactly one",
            layers.len()
        ))),
    }
}

/// Finds the entrypoint as `execve` would: a path with a `/` is taken as it is (relative to
/// the working directory), a bare name is searched in the container's `PATH`, then in the
/// working directory. The first regular file found is the entrypoint. If there is none, and
/// something else is there (a directory, a FIFO, a symlink loop), the entrypoint was found
/// but cannot be run ([`WorkloadError::NotWasm`], 126, as the shell says for a directory);
/// if nothing is, it was not found (127). Nothing is opened: a FIFO is never waited on.
fn resolve_entrypoint(path: &str, env: &[(String, String)]) -> Result<PathBuf, WorkloadError> {
    if path.is_empty() {
        return Err(WorkloadError::NoEntrypoint);
    }
    let search_path = env
        .iter()
        .find(|(name, _)| name == "PATH")
        .map(|(_, value)| value.as_str())
        .unwrap_or(DEFAULT_PATH);
    let mut unusable = None;
    let mut not_found_reason = None;
    for candidate in entrypoint_candidates(path, search_path) {
        let cannot_run = |reason: String| WorkloadError::NotWasm {
            what: candidate.display().to_string(),
            reason,
        };
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() => return Ok(candidate),
            Ok(meta) => {
                unusable.get_or_insert_with(|| cannot_run(not_a_file(&meta.file_type())));
            }
            Err(err) => match err.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => {}
                Some(libc::ENAMETOOLONG) => {
                    not_found_reason.get_or_insert_with(|| {
                        format!("the path is longer than the kernel resolves ({err})")
                    });
                }
                Some(libc::ELOOP) => {
                    unusable.get_or_insert_with(|| {
                        cannot_run(format!("its symbolic links do not resolve ({err})"))
                    });
                }
                _ => {
                    unusable
                        .get_or_insert_with(|| cannot_run(format!("it cannot be read ({err})")));
                }
            },
        }
    }
    Err(
        unusable.unwrap_or_else(|| WorkloadError::EntrypointNotFound {
            path: path.to_string(),
            reason: not_found_reason,
        }),
    )
}

/// What an entrypoint that is not a regular file is, for a message.
fn not_a_file(file_type: &std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if file_type.is_dir() {
        "a directory"
    } else if file_type.is_fifo() {
        "a named pipe (FIFO)"
    } else if file_type.is_socket() {
        "a socket"
    } else if file_type.is_block_device() || file_type.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    format!("it is {what}, not a file")
}

/// Every directory the policy grants must be one in the container: a grant of a missing
/// directory is a mistake the user should hear of before the guest half-runs. The paths are
/// looked up inside the container (its rootfs is `/`), so a symlink in one cannot lead out.
fn check_preopens(capabilities: &Capabilities) -> Result<(), WorkloadError> {
    for preopen in &capabilities.files.0 {
        match std::fs::metadata(&preopen.path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(WorkloadError::Policy(format!(
                    "{} grants {}, which is not a directory in the container",
                    Key::Files.annotation(),
                    preopen.path
                )));
            }
            Err(err) => {
                return Err(WorkloadError::Policy(format!(
                    "{} grants {}, which the container does not have: {err}",
                    Key::Files.annotation(),
                    preopen.path
                )));
            }
        }
    }
    Ok(())
}

fn split_env(envs: &[String]) -> Vec<(String, String)> {
    envs.iter()
        .map(|entry| match entry.split_once('=') {
            Some((name, value)) => (name.to_string(), value.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_modules_components_and_junk() {
        let module = b"\0asm\x01\0\0\0";
        let component = b"\0asm\x0d\0\x01\0";
        assert_eq!(classify("m", module).ok(), Some(WorkloadKind::Module));
        assert_eq!(classify("c", component).ok(), Some(WorkloadKind::Component));
        let err = classify("/app/x.wasm", b"#!/bin/sh\n").unwrap_err();
        assert!(err.to_string().contains("23 21 2f 62"), "{err}");
        let err = classify("/app/x.wasm", b"").unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn a_bad_header_is_described_for_what_it_is() {
        let reason = |bytes: &[u8]| describe_header(bytes);
        assert_eq!(
            reason(b"\0asm\x02\0\0\0rest"),
            "it has the wasm magic number but version bytes [02 00 00 00]; a core module has \
             01 00 00 00 and a component 0d 00 01 00"
        );
        assert_eq!(
            reason(b"\0asm\x01\0"),
            "it ends after 6 bytes [00 61 73 6d 01 00], inside the 8-byte wasm header"
        );
        assert_eq!(
            reason(b"\0as"),
            "it ends after 3 bytes [00 61 73], inside the 8-byte wasm header"
        );
        assert_eq!(
            reason(b"\0asn\x01\0\0\0"),
            "it starts with bytes [00 61 73 6e 01 00 00 00], not the wasm header 00 61 73 6d"
        );
        assert_eq!(
            reason(b"ab"),
            "it starts with bytes [61 62], not the wasm header 00 61 73 6d"
        );
    }

    #[test]
    fn an_entrypoint_that_is_not_a_file_cannot_run_and_an_absent_one_is_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        std::fs::create_dir(root.join("dir.wasm")).expect("mkdir");
        let fifo = std::ffi::CString::new(root.join("fifo.wasm").as_os_str().as_encoded_bytes())
            .expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::os::unix::fs::symlink(root.join("b.wasm"), root.join("a.wasm")).expect("symlink");
        std::os::unix::fs::symlink(root.join("a.wasm"), root.join("b.wasm")).expect("symlink");
        std::fs::write(root.join("file"), b"x").expect("write");
        let env = Vec::new();
        let resolve = |name: &str| resolve_entrypoint(&root.join(name).to_string_lossy(), &env);
        let reason_of = |name: &str| match resolve(name) {
            Err(WorkloadError::NotWasm { reason, .. }) => reason,
            other => panic!("{name}: {other:?}"),
        };
        assert_eq!(reason_of("dir.wasm"), "it is a directory, not a file");
        assert_eq!(
            reason_of("fifo.wasm"),
            "it is a named pipe (FIFO), not a file"
        );
        assert!(reason_of("a.wasm").contains("symbolic links do not resolve"));
        assert!(matches!(
            resolve("file/under-a-file.wasm"),
            Err(WorkloadError::EntrypointNotFound { reason: None, .. })
        ));
        let long = format!("/{}", "x".repeat(5000));
        assert!(matches!(
            resolve_entrypoint(&long, &env),
            Err(WorkloadError::EntrypointNotFound {
                reason: Some(_),
                ..
            })
        ));
        assert!(matches!(
            resolve_entrypoint("", &env),
            Err(WorkloadError::NoEntrypoint)
        ));
        for err in [
            resolve("dir.wasm").unwrap_err(),
            resolve("a.wasm").unwrap_err(),
        ] {
            assert_eq!(crate::failure::exit_code_for(&err), 126, "{err}");
        }
    }

    #[test]
    fn env_entries_split_at_the_first_equals() {
        let env = split_env(&["A=b=c".into(), "EMPTY=".into(), "BARE".into()]);
        assert_eq!(
            env,
            vec![
                ("A".into(), "b=c".into()),
                ("EMPTY".into(), String::new()),
                ("BARE".into(), String::new())
            ]
        );
    }

    #[test]
    fn entrypoint_resolution_uses_path_for_bare_names() {
        let dir = std::env::temp_dir().join(format!("wasmrunner-resolve-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("tool.wasm"), b"\0asm").expect("write");
        let env = vec![(
            "PATH".to_string(),
            format!("/nonexistent:{}", dir.display()),
        )];
        assert_eq!(
            resolve_entrypoint("tool.wasm", &env).ok(),
            Some(dir.join("tool.wasm"))
        );
        let missing = resolve_entrypoint("/definitely/not/here.wasm", &env).unwrap_err();
        assert!(matches!(missing, WorkloadError::EntrypointNotFound { .. }));
        assert!(resolve_entrypoint("", &env).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
