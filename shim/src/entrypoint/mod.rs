//! The container's entrypoint as its image holds it, found from the host before the
//! container is built: one lookup, which decides whether the workload is a native program
//! or Wasm, and gives the node module cache the module's bytes.

mod in_root;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

pub(crate) use in_root::candidates;

/// The search path when the container's env has no `PATH` (runc's and containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The container's `PATH`, or [`DEFAULT_PATH`].
pub fn search_path<'a>(env: impl IntoIterator<Item = &'a str>) -> &'a str {
    env.into_iter()
        .find_map(|var| var.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH)
}

/// The entrypoint's path as the container's `arg0` names it (without `#function`).
pub fn path_of(arg0: &str) -> &str {
    arg0.split_once('#').map_or(arg0, |(path, _)| path)
}

/// The file `arg0` names in the image's rootfs, opened from the host.
#[derive(Debug)]
pub struct ImageEntrypoint {
    /// As the container names it (`arg0` without `#function`).
    pub path: String,
    file: File,
}

impl ImageEntrypoint {
    /// Looks `arg0` up in the bundle's rootfs as the container will: every path resolved
    /// inside the rootfs, `PATH` searched for a bare name. `None` when no regular file is
    /// found (the image may get it from a volume; the container then looks for itself).
    /// A FIFO or device there is passed over without blocking.
    pub fn find(bundle: &Path, spec: &Spec) -> std::io::Result<Option<Self>> {
        let Some(process) = spec.process().as_ref() else {
            return Ok(None);
        };
        let Some(arg0) = process.args().as_ref().and_then(|args| args.first()) else {
            return Ok(None);
        };
        let path = path_of(arg0);
        let env = process.env().as_deref().unwrap_or_default();
        let root = spec
            .root()
            .as_ref()
            .map_or_else(|| PathBuf::from("rootfs"), |root| root.path().clone());
        let rootfs = File::open(bundle.join(root))?;
        for candidate in candidates(path, search_path(env.iter().map(String::as_str))) {
            if let Some(file) = in_root::open_regular(&rootfs, process.cwd(), &candidate)? {
                return Ok(Some(Self {
                    path: path.to_string(),
                    file,
                }));
            }
        }
        Ok(None)
    }

    /// An executable ELF binary or `#!` script: run with `execve` and the spec as it is.
    pub fn is_native(&self) -> bool {
        let executable = self
            .file
            .metadata()
            .is_ok_and(|meta| meta.permissions().mode() & 0o111 != 0);
        let mut magic = [0u8; 4];
        executable
            && self.file.read_exact_at(&mut magic, 0).is_ok()
            && (magic == *b"\x7fELF" || magic.starts_with(b"#!"))
    }

    /// The file's size in bytes.
    pub fn size(&self) -> std::io::Result<u64> {
        self.file.metadata().map(|meta| meta.len())
    }

    /// The whole file, when it is a wasm binary (module or component).
    pub fn wasm_bytes(mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut bytes = Vec::new();
        self.file.read_to_end(&mut bytes)?;
        Ok(bytes.starts_with(b"\0asm").then_some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use oci_spec::runtime::{ProcessBuilder, RootBuilder, SpecBuilder};

    use super::*;

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        SpecBuilder::default()
            .root(RootBuilder::default().path("rootfs").build().expect("root"))
            .process(
                ProcessBuilder::default()
                    .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
                    .env(env.iter().map(|e| e.to_string()).collect::<Vec<_>>())
                    .build()
                    .expect("process"),
            )
            .build()
            .expect("spec")
    }

    fn bundle_with(files: &[(&str, &[u8], u32)]) -> tempfile::TempDir {
        let bundle = tempfile::tempdir().expect("tempdir");
        for (path, bytes, mode) in files {
            let full = bundle
                .path()
                .join("rootfs")
                .join(path.trim_start_matches('/'));
            std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
            std::fs::write(&full, bytes).expect("write");
            std::fs::set_permissions(&full, std::fs::Permissions::from_mode(*mode)).expect("chmod");
        }
        bundle
    }

    #[test]
    fn elf_and_scripts_are_native_wasm_and_junk_are_not() {
        let bundle = bundle_with(&[
            ("/pause", b"\x7fELF....", 0o755),
            ("/bin/tool", b"#!/bin/sh\n", 0o755),
            ("/app.wasm", b"\0asm\x01\0\0\0", 0o755),
            ("/not-exec", b"\x7fELF....", 0o644),
        ]);
        let native = |args: &[&str], env: &[&str]| {
            ImageEntrypoint::find(bundle.path(), &spec(args, env))
                .expect("find")
                .is_some_and(|entry| entry.is_native())
        };
        assert!(native(&["/pause"], &[]));
        // A bare name is searched in the default PATH when the env has none.
        assert!(native(&["tool"], &[]));
        assert!(!native(&["tool"], &["PATH=/usr/bin"]));
        assert!(!native(&["/app.wasm"], &[]));
        assert!(!native(&["/not-exec"], &[]));
        assert!(!native(&["/missing"], &[]));
    }

    #[test]
    fn wasm_bytes_are_read_and_the_function_is_not_part_of_the_path() {
        let bundle = bundle_with(&[("/app.wasm", b"\0asm\x01\0\0\0", 0o644)]);
        let entry = ImageEntrypoint::find(bundle.path(), &spec(&["/app.wasm#serve"], &[]))
            .expect("find")
            .expect("found");
        assert_eq!(entry.path, "/app.wasm");
        assert_eq!(
            entry.wasm_bytes().expect("read").as_deref(),
            Some(&b"\0asm\x01\0\0\0"[..])
        );
    }

    /// Opening a FIFO for reading waits for a writer; the lookup must not.
    #[test]
    fn a_fifo_entrypoint_is_passed_over_without_blocking() {
        let bundle = bundle_with(&[]);
        let fifo = bundle.path().join("rootfs/app.wasm");
        std::fs::create_dir_all(fifo.parent().expect("parent")).expect("mkdir");
        let c_path = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: mkfifo reads a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let found = ImageEntrypoint::find(bundle.path(), &spec(&["/app.wasm"], &[])).expect("find");
        assert!(found.is_none(), "a FIFO is not an entrypoint: {found:?}");
    }
}
