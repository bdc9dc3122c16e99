//! What makes a cache entry safe to run: its code is mapped into containers unchecked, so
//! only root may ever have been able to write it, or any directory on the way to it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::sys::openat2_read;

/// Why a cache directory is not used.
#[derive(Debug, thiserror::Error)]
pub enum UntrustedDir {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is owned by uid {uid}, not by this process's user ({euid})")]
    Owner { path: PathBuf, uid: u32, euid: u32 },
    #[error("{path} can be written by its group or by others (mode {mode:o})")]
    Writable { path: PathBuf, mode: u32 },
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Resolves `dir` once (the resolved path is what is used from then on) and checks that it
/// and every directory above it belong to this process's user (root) and cannot be written
/// by anyone else: then nobody but root can have put, replaced or renamed anything in it.
pub fn trusted_dir(dir: &Path) -> Result<PathBuf, UntrustedDir> {
    let canonical = dir.canonicalize().map_err(|source| UntrustedDir::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let euid = euid();
    for path in canonical.ancestors() {
        let meta = std::fs::symlink_metadata(path).map_err(|source| UntrustedDir::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if meta.uid() != euid {
            return Err(UntrustedDir::Owner {
                path: path.to_path_buf(),
                uid: meta.uid(),
                euid,
            });
        }
        if meta.mode() & 0o022 != 0 {
            return Err(UntrustedDir::Writable {
                path: path.to_path_buf(),
                mode: meta.mode() & 0o7777,
            });
        }
    }
    Ok(canonical)
}

/// Opens a cache entry read-only, following no symlink anywhere on its path, and keeps it
/// only if it is a regular file of this process's user that nobody else can write. `None`
/// when there is no such entry.
pub fn open_entry(path: &Path) -> std::io::Result<Option<File>> {
    let Some(file) = openat2_read(
        libc::AT_FDCWD,
        path,
        libc::O_NOFOLLOW,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )?
    else {
        return Ok(None);
    };
    let meta = file.metadata()?;
    let trusted = meta.is_file() && meta.uid() == euid() && meta.mode() & 0o022 == 0;
    Ok(trusted.then_some(file))
}

/// Marks an entry as used now (its modification time), at most once an hour, for the
/// least-recently-used eviction.
pub fn touch(file: &File) {
    let stale = file
        .metadata()
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| modified.elapsed().ok())
        .is_some_and(|age| age > std::time::Duration::from_secs(3600));
    if stale {
        // SAFETY: futimens with a null `times` sets both times to now on a descriptor this
        // function borrows; the file is this process's user's, so it is allowed.
        unsafe {
            libc::futimens(file.as_raw_fd(), std::ptr::null());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A scratch directory under the crate (root-owned, not world-writable, unlike /tmp).
    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(".cache-trust-test")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .expect("tempdir")
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_private_directory_chain_is_trusted() {
        let base = scratch();
        let dir = base.path().join("cache/wasmtime");
        std::fs::create_dir_all(&dir).expect("mkdir");
        assert_eq!(
            trusted_dir(&dir).expect("trusted"),
            dir.canonicalize().expect("canonical")
        );
    }

    #[test]
    fn a_writable_directory_anywhere_on_the_path_is_refused() {
        let base = scratch();
        let dir = base.path().join("cache/wasmtime");
        std::fs::create_dir_all(&dir).expect("mkdir");
        chmod(&base.path().join("cache"), 0o777);
        let err = trusted_dir(&dir).expect_err("a world-writable parent");
        assert!(matches!(err, UntrustedDir::Writable { .. }), "{err}");
        // /tmp itself is world-writable: a cache there is refused too.
        let tmp = tempfile::tempdir().expect("tempdir");
        assert!(trusted_dir(tmp.path()).is_err());
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let base = scratch();
        let dir = base.path().join("cache");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::os::unix::fs::chown(&dir, Some(65534), None).expect("chown");
        let err = trusted_dir(&dir).expect_err("owned by nobody");
        assert!(
            matches!(err, UntrustedDir::Owner { uid: 65534, .. }),
            "{err}"
        );
    }

    #[test]
    fn entries_are_regular_private_files_reached_without_symlinks() {
        let base = scratch();
        let entry = base.path().join("entry");
        std::fs::write(&entry, b"code").expect("write");
        chmod(&entry, 0o600);
        assert!(open_entry(&entry).expect("open").is_some());

        let link = base.path().join("link");
        std::os::unix::fs::symlink(&entry, &link).expect("symlink");
        assert!(
            open_entry(&link).expect("open").is_none(),
            "a symlinked entry"
        );

        chmod(&entry, 0o666);
        assert!(
            open_entry(&entry).expect("open").is_none(),
            "a writable entry"
        );
        chmod(&entry, 0o600);

        std::os::unix::fs::chown(&entry, Some(65534), None).expect("chown");
        assert!(
            open_entry(&entry).expect("open").is_none(),
            "another user's entry"
        );

        assert!(
            open_entry(&base.path().join("missing"))
                .expect("open")
                .is_none()
        );
        assert!(
            open_entry(base.path()).expect("open").is_none(),
            "a directory"
        );
    }
}
