//! File helpers: atomic replacement (write a temp file beside the target, fsync, rename), hashes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use thiserror::Error;

#[derive(Debug, Error)]
#[error("{action} {path}: {source}")]
pub struct FsError {
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl FsError {
    pub fn new(action: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FsError::new("cannot read", path, e)),
    }
}

/// Removes a file; a missing file is not an error. Returns whether it existed.
pub fn remove_optional(path: &Path) -> Result<bool, FsError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(FsError::new("cannot remove", path, e)),
    }
}

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.wasmrunner-tmp-{}", std::process::id()))
}

/// Replaces `path` with `bytes` atomically: readers see the old or the new content, never a
/// mix. `mode` defaults to the mode of the file being replaced, else 0644.
pub fn atomic_write(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<(), FsError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(|e| FsError::new("cannot create directory", &dir, e))?;
    let mode = mode.unwrap_or_else(|| {
        fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644)
    });
    let tmp = temp_path_for(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| FsError::new("cannot create", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| FsError::new("cannot write", &tmp, e))?;
        // The umask may have narrowed the mode given to open().
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .map_err(|e| FsError::new("cannot set permissions on", &tmp, e))?;
        file.sync_all()
            .map_err(|e| FsError::new("cannot sync", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| FsError::new("cannot rename into place", path, e))?;
        // Make the rename durable too.
        if let Ok(d) = File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_empty_input() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn atomic_write_creates_and_replaces_keeping_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file");
        atomic_write(&path, b"one", Some(0o600)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        atomic_write(&path, b"two", None).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // No temp file left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"]);
    }

    #[test]
    fn optional_helpers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        assert_eq!(read_optional(&path).unwrap(), None);
        assert!(!remove_optional(&path).unwrap());
        fs::write(&path, b"x").unwrap();
        assert_eq!(read_optional(&path).unwrap(), Some(b"x".to_vec()));
        assert!(remove_optional(&path).unwrap());
    }
}
