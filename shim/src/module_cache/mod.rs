//! Compiled modules, cached once per node and mapped into every container that runs them.
//!
//! For an image whose rootfs holds the `.wasm` entrypoint, the serving process (per-pod shim
//! or manager) finds the module in the rootfs before the container is built, compiles it
//! once with the engine's `Compiler` and keeps the result in a file:
//! `<cache dir>/<engine>/<cache key hash>/<sha256 of the module>`. Every container of that
//! module then gets the file open on a descriptor and maps it (`offer_compiled`), instead of
//! compiling in the container: no compiler heap in the container, and the code pages are
//! the page cache's, shared by all of them.
//!
//! The container checks that the module it is about to run is the one that was compiled
//! (same sha256), since a volume mounted over the image's path is only visible inside it;
//! on any mismatch or failure it compiles as before. Only engines that list
//! [`NODE_MODULE_CACHE`] in their features take part.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use containerd_shim_wasm::sandbox::context::WasmLayer;
use containerd_shim_wasm::shim::Compiler;
use oci_spec::image::{Descriptor, Digest, MediaType};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::content::cache_key_hash;
use crate::entrypoint::ImageEntrypoint;

/// The engine feature (`EngineInfo::features`) that turns the node's module cache on.
pub const NODE_MODULE_CACHE: &str = "node-module-cache";

/// Where the cache lives, unless set: persistent, like containerd's own `/var/lib/containerd`.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmrunner/cache";

/// Overrides [`DEFAULT_CACHE_DIR`] (the test harness gives each containerd its own).
pub const CACHE_DIR_ENV: &str = "WASMRUNNER_CACHE_DIR";

/// A compiled module in the cache, as the container is told about it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompiledModule {
    pub path: PathBuf,
    /// sha256 of the module it was compiled from (of the code itself, for a precompiled
    /// image layer), in hex.
    pub source_sha256: String,
    /// The code of a precompiled image layer, whose bytes the container is not sent: it
    /// cannot run without this file.
    pub replaces_layer: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleCacheError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("compiling {what}: {reason}")]
    Compile { what: String, reason: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ModuleCacheError {
    let what = what.into();
    move |source| ModuleCacheError::Io { what, source }
}

/// One engine's part of the node's module cache.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    engine: String,
    dir: PathBuf,
}

impl ModuleCache {
    /// The cache of `engine` under [`CACHE_DIR_ENV`] or [`DEFAULT_CACHE_DIR`].
    pub fn for_engine(engine: &str) -> Self {
        let root = std::env::var_os(CACHE_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from);
        Self {
            engine: engine.to_string(),
            dir: root.join(engine),
        }
    }

    /// The compiled code of the container's entrypoint, compiled now on a miss. `None` when
    /// the entrypoint is not a module or component, or does not compile: the container then
    /// finds (and reports) it itself, as without a cache.
    pub async fn prepare<C: Compiler>(
        &self,
        entrypoint: ImageEntrypoint,
        compiler: &C,
    ) -> Result<Option<CompiledModule>, ModuleCacheError> {
        let name = entrypoint.path.clone();
        let Some(bytes) = entrypoint
            .wasm_bytes()
            .map_err(io_error(format!("reading {name} in the rootfs")))?
        else {
            return Ok(None);
        };
        let source_sha256 = hex(&Sha256::digest(&bytes));
        let dir = self.dir.join(cache_key_hash(compiler.cache_key()));
        let path = dir.join(&source_sha256);
        let found = |path: PathBuf| {
            Some(CompiledModule {
                path,
                source_sha256: source_sha256.clone(),
                replaces_layer: false,
            })
        };
        if trusted(&path) {
            return Ok(found(path));
        }
        // Many pods of a new module start at once: one compiles, in whichever shim or
        // manager takes the lock first, and the others wait for its result.
        let _lock = CompileLock::take(&dir, &source_sha256)?;
        if trusted(&path) {
            return Ok(found(path));
        }
        let layer = WasmLayer {
            config: Descriptor::new(
                MediaType::Other("application/wasm".into()),
                bytes.len() as u64,
                sha256_digest(&source_sha256)?,
            ),
            precompiled: false,
            layer: bytes,
        };
        let compiled = compiler
            .compile(std::slice::from_ref(&layer))
            .await
            .map_err(|e| ModuleCacheError::Compile {
                what: name.clone(),
                reason: format!("{e:#}"),
            })?;
        drop(layer);
        // The compiler's working memory is not needed again until the next miss.
        crate::memory::release_loader_memory();
        let Some(Some(code)) = compiled.into_iter().next() else {
            return Ok(None);
        };
        write_atomically(&dir, &path, &code)?;
        tracing::debug!(
            "{}: compiled {name} ({source_sha256}) into the node cache",
            self.engine
        );
        Ok(found(path))
    }
}

impl ModuleCache {
    /// Keeps an image layer's precompiled code (from containerd's content store, see
    /// `content`) in a file of the cache, so that containers map it rather than each getting
    /// a copy: the returned module replaces the layer's bytes, which need not be sent.
    pub fn keep_precompiled(
        &self,
        cache_key: &str,
        code: &[u8],
    ) -> Result<CompiledModule, ModuleCacheError> {
        let sha256 = hex(&Sha256::digest(code));
        let dir = self.dir.join(cache_key);
        let path = dir.join(&sha256);
        if !trusted(&path) {
            write_atomically(&dir, &path, code)?;
        }
        Ok(CompiledModule {
            path,
            source_sha256: sha256,
            replaces_layer: true,
        })
    }
}

/// An exclusive `flock` on `<dir>/.<sha256>.lock`, shared by every process on the node,
/// released when dropped (the empty lock file stays).
struct CompileLock {
    /// Holding the descriptor holds the lock; closing it releases it.
    _file: File,
}

impl CompileLock {
    fn take(dir: &Path, sha256: &str) -> Result<Self, ModuleCacheError> {
        create_private_dir(dir)?;
        let path = dir.join(format!(".{sha256}.lock"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_error(format!("opening {}", path.display())))?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns; it blocks until the lock is ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0;
        if !locked {
            return Err(io_error(format!("locking {}", path.display()))(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Self { _file: file })
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ModuleCacheError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("creating {}", dir.display())))
}

/// A cache entry is used only if it is a regular file of this process's user that nobody
/// else can write: its code will run unchecked in containers.
fn trusted(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    std::fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.uid() == euid && meta.mode() & 0o022 == 0)
}

/// Writes `code` to `path` so that no reader ever sees part of it: a private temporary file
/// in the same directory, renamed over `path`. Two shims (or two threads of a manager)
/// compiling the same module at once both succeed; the last rename wins with identical
/// bytes. The temporary file is created exclusively (`O_EXCL`, no symlink followed) under a
/// name unique to this process and call, so nobody's file is reused or truncated.
fn write_atomically(dir: &Path, path: &Path, code: &[u8]) -> Result<(), ModuleCacheError> {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    create_private_dir(dir)?;
    let temporary = dir.join(format!(
        ".{}.{}.{}.tmp",
        path.file_name().map_or_else(
            || "module".into(),
            |name| name.to_string_lossy().into_owned()
        ),
        std::process::id(),
        WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| file.write_all(code))
        .and_then(|()| std::fs::rename(&temporary, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    written.map_err(io_error(format!("writing {}", path.display())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_digest(hex: &str) -> Result<Digest, ModuleCacheError> {
    format!("sha256:{hex}")
        .parse()
        .map_err(|e: oci_spec::OciSpecError| ModuleCacheError::Compile {
            what: hex.to_string(),
            reason: e.to_string(),
        })
}

/// What the container is offered: the cache file, open, and the module it was compiled from.
#[derive(Debug)]
pub struct OfferedCode {
    pub file: File,
    pub source_sha256: String,
}

impl OfferedCode {
    /// Opens the cache file for a container (in the builder, before libcontainer clones the
    /// container's init, which inherits the descriptor). Failing to is an error only for an
    /// image layer's code, which the container has no other copy of.
    pub fn open(module: &CompiledModule) -> Result<Option<Self>, String> {
        match File::open(&module.path) {
            Ok(file) => Ok(Some(Self {
                file,
                source_sha256: module.source_sha256.clone(),
            })),
            Err(err) if module.replaces_layer => Err(format!(
                "opening the precompiled code {}: {err}",
                module.path.display()
            )),
            Err(err) => {
                tracing::warn!("not using {}: {err}", module.path.display());
                Ok(None)
            }
        }
    }

    /// The file, for the image layer whose code it is.
    pub fn for_layer(self) -> File {
        self.file
    }

    /// The file, if `wasm` is the module it was compiled from.
    pub fn for_module(self, wasm: &[u8]) -> Option<File> {
        (hex(&Sha256::digest(wasm)) == self.source_sha256).then_some(self.file)
    }
}
