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
use crate::sys::ExclusiveLock;

mod eviction;
mod trust;

/// The engine feature (`EngineInfo::features`) that turns the node's module cache on.
pub const NODE_MODULE_CACHE: &str = "node-module-cache";

/// The engine feature saying its containers map the cache's code file, so that all of them
/// share one copy of its pages (Wasmtime). An engine without it loads the file into memory of
/// its own (Wasmer copies code into its executable memory): compiled once per node, but a
/// copy per container.
pub const MAPPED_CODE: &str = "mapped-code";

/// Where the cache lives, unless set: persistent, like containerd's own `/var/lib/containerd`.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/wasmrunner/cache";

/// Overrides [`DEFAULT_CACHE_DIR`] (the test harness gives each containerd its own).
pub const CACHE_DIR_ENV: &str = "WASMRUNNER_CACHE_DIR";

/// Caps the size of each engine's cache, in bytes (default 2 GiB): past it, the least
/// recently used entries are removed.
pub const CACHE_MAX_BYTES_ENV: &str = "WASMRUNNER_CACHE_MAX_BYTES";

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
    /// Compiled by this Create (a miss of the node cache), not found there.
    pub compiled_now: bool,
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
    #[error("the cache directory is not trusted: {reason}")]
    Untrusted { reason: String },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ModuleCacheError {
    let what = what.into();
    move |source| ModuleCacheError::Io { what, source }
}

/// One engine's part of the node's module cache.
#[derive(Debug, Clone)]
pub struct ModuleCache {
    engine: String,
    /// Resolved once and checked (see [`trust::trusted_dir`]).
    dir: PathBuf,
    max_bytes: u64,
}

impl ModuleCache {
    /// The cache of `engine` under [`CACHE_DIR_ENV`] or [`DEFAULT_CACHE_DIR`], created if
    /// missing. `None`, with a warning in containerd's log, when that directory or one above
    /// it could be written by anyone but root: its code would run in containers, so
    /// containers then compile their modules themselves.
    pub fn for_engine(engine: &str) -> Option<Self> {
        let root = std::env::var_os(CACHE_DIR_ENV)
            .filter(|dir| !dir.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR), PathBuf::from);
        let max_bytes = std::env::var(CACHE_MAX_BYTES_ENV)
            .ok()
            .and_then(|bytes| bytes.parse().ok())
            .unwrap_or(eviction::DEFAULT_MAX_BYTES);
        Self::at(engine, &root.join(engine), max_bytes)
            .inspect_err(|err| {
                tracing::warn!(
                    "node module cache off: {err}; containers compile their modules themselves"
                )
            })
            .ok()
    }

    fn at(engine: &str, dir: &Path, max_bytes: u64) -> Result<Self, ModuleCacheError> {
        create_private_dir(dir)?;
        let dir = trust::trusted_dir(dir).map_err(|err| ModuleCacheError::Untrusted {
            reason: err.to_string(),
        })?;
        Ok(Self {
            engine: engine.to_string(),
            dir,
            max_bytes,
        })
    }

    /// Whether a trusted entry is at `path` (and marks it used).
    fn cached(path: &Path) -> bool {
        trust::open_entry(path)
            .ok()
            .flatten()
            .inspect(trust::touch)
            .is_some()
    }

    /// Writes a new entry, then keeps the cache under its cap.
    fn store(&self, dir: &Path, path: &Path, code: &[u8]) -> Result<(), ModuleCacheError> {
        write_atomically(dir, path, code)?;
        let removed = eviction::evict(&self.dir, self.max_bytes, path);
        if removed > 0 {
            tracing::info!(
                "{}: removed {removed} least recently used entries from the node cache (cap {} bytes)",
                self.engine,
                self.max_bytes
            );
        }
        Ok(())
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
        let found = |path: PathBuf, compiled_now: bool| {
            Some(CompiledModule {
                path,
                source_sha256: source_sha256.clone(),
                replaces_layer: false,
                compiled_now,
            })
        };
        if Self::cached(&path) {
            return Ok(found(path, false));
        }
        // Many pods of a new module start at once: one compiles, in whichever shim or
        // manager takes the lock first, and the others wait for its result.
        let _lock = lock_entry(&dir, &source_sha256)?;
        if Self::cached(&path) {
            return Ok(found(path, false));
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
        self.store(&dir, &path, &code)?;
        tracing::debug!(
            "{}: compiled {name} ({source_sha256}) into the node cache",
            self.engine
        );
        Ok(found(path, true))
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
        if !Self::cached(&path) {
            // The same lock as a rootfs module's compile: one writer per entry on the node.
            let _lock = lock_entry(&dir, &sha256)?;
            if !Self::cached(&path) {
                self.store(&dir, &path, code)?;
            }
        }
        Ok(CompiledModule::precompiled(path, sha256))
    }

    /// The entry holding precompiled code whose sha256 is `sha256` (hex), if the node has it:
    /// what [`ModuleCache::keep_precompiled`] made of that code, found without reading it.
    /// The name is not trusted blindly: the entry must pass the cache's own checks (a regular
    /// file the shim wrote, see `trust`). A name that is not 64 hex digits finds nothing. The
    /// guest has no say in the lookup: the digest comes from the label the shim itself put on
    /// the layer in containerd's content store, and the entry is offered to the container
    /// read-only, as before.
    pub fn precompiled_entry(&self, cache_key: &str, sha256: &str) -> Option<CompiledModule> {
        let hex_name = sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex_name {
            return None;
        }
        let path = self.dir.join(cache_key).join(sha256);
        Self::cached(&path).then(|| CompiledModule::precompiled(path, sha256.to_string()))
    }
}

impl CompiledModule {
    /// A cache entry holding an image layer's precompiled code, which replaces the layer.
    fn precompiled(path: PathBuf, sha256: String) -> Self {
        Self {
            path,
            source_sha256: sha256,
            replaces_layer: true,
            compiled_now: false,
        }
    }
}

/// Takes the node-wide lock on one entry, `<dir>/.<sha256>.lock`: one writer at a time.
fn lock_entry(dir: &Path, sha256: &str) -> Result<ExclusiveLock, ModuleCacheError> {
    create_private_dir(dir)?;
    let path = dir.join(format!(".{sha256}.lock"));
    ExclusiveLock::take(&path).map_err(io_error(format!("locking {}", path.display())))
}

fn create_private_dir(dir: &Path) -> Result<(), ModuleCacheError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(format!("creating {}", dir.display())))
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
        let opened = trust::open_entry(&module.path).and_then(|file| {
            file.ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no trusted entry (missing, a symlink, or writable by others)",
                )
            })
        });
        match opened {
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Barrier};

    use super::*;

    /// A scratch directory under the crate (root-owned, not world-writable, unlike /tmp).
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(".module-cache-test")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .expect("tempdir")
    }

    #[test]
    fn a_pre_created_insecure_directory_turns_the_cache_off() {
        let base = scratch();
        let dir = base.path().join("wasmtime");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        let err = ModuleCache::at("wasmtime", &dir, u64::MAX).expect_err("world-writable");
        assert!(matches!(err, ModuleCacheError::Untrusted { .. }), "{err}");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(ModuleCache::at("wasmtime", &dir, u64::MAX).is_ok());
    }

    #[test]
    fn precompiled_code_is_found_by_its_sha256_without_reading_it() {
        let base = scratch();
        let cache =
            ModuleCache::at("wasmtime", &base.path().join("wasmtime"), u64::MAX).expect("cache");
        let sha256 = hex(&Sha256::digest(b"code"));
        assert!(cache.precompiled_entry("key", &sha256).is_none());
        let kept = cache.keep_precompiled("key", b"code").expect("kept");
        let found = cache.precompiled_entry("key", &sha256).expect("found");
        assert_eq!(found.path, kept.path);
        assert!(found.replaces_layer);
        // Another engine's key, a name that is no digest, a path: nothing.
        assert!(cache.precompiled_entry("other", &sha256).is_none());
        assert!(cache.precompiled_entry("key", "../key").is_none());
        assert!(cache.precompiled_entry("key", &sha256[..63]).is_none());
    }

    #[test]
    fn precompiled_code_is_kept_once_and_offered_read_only() {
        let base = scratch();
        let cache =
            ModuleCache::at("wasmtime", &base.path().join("wasmtime"), u64::MAX).expect("cache");
        let kept = cache.keep_precompiled("key", b"code").expect("kept");
        let again = cache.keep_precompiled("key", b"code").expect("kept again");
        assert_eq!(kept.path, again.path);
        let offered = OfferedCode::open(&kept).expect("open").expect("offered");
        let flags = {
            use std::os::fd::AsRawFd;
            // SAFETY: F_GETFL on a descriptor the test owns.
            unsafe { libc::fcntl(offered.file.as_raw_fd(), libc::F_GETFL) }
        };
        assert_eq!(flags & libc::O_ACCMODE, libc::O_RDONLY);
        // An entry replaced by a symlink is not offered.
        std::fs::remove_file(&kept.path).expect("rm");
        std::os::unix::fs::symlink("/etc/hostname", &kept.path).expect("symlink");
        assert!(
            OfferedCode::open(&kept).is_err(),
            "a layer's code must be there"
        );
    }

    #[test]
    fn the_cap_removes_older_entries_when_a_new_one_is_stored() {
        let base = scratch();
        let cache = ModuleCache::at("wasmtime", &base.path().join("wasmtime"), 6).expect("cache");
        let first = cache.keep_precompiled("key", b"1111").expect("first");
        let second = cache.keep_precompiled("key", b"2222").expect("second");
        assert!(second.path.exists());
        assert!(
            !first.path.exists(),
            "8 bytes against a cap of 6: the older one goes"
        );
    }

    /// Two writers of one entry (two shims, or two threads of a manager) take turns.
    #[test]
    fn the_lock_lets_one_writer_in_at_a_time() {
        let base = scratch();
        let dir = Arc::new(base.path().join("key"));
        let inside = Arc::new(AtomicBool::new(false));
        let start = Arc::new(Barrier::new(2));
        let writers: Vec<_> = (0..2)
            .map(|_| {
                let (dir, inside, start) = (dir.clone(), inside.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let _lock = lock_entry(&dir, "abc").expect("lock");
                    assert!(!inside.swap(true, Ordering::SeqCst), "two writers at once");
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    inside.store(false, Ordering::SeqCst);
                })
            })
            .collect();
        for writer in writers {
            writer.join().expect("writer");
        }
    }
}
