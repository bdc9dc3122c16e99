//! The shim binaries: finding `containerd-shim-*-v1` files, copying them onto the node
//! atomically (skipping identical files), and removing exactly the ones the installer put there.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::fsutil::{self, FsError, atomic_write, read_optional, sha256_hex};
use crate::runtimes::engine_of_shim_file;

#[derive(Debug, Error)]
pub enum BinaryError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("shim binary {0} not found")]
    Missing(PathBuf),
}

/// A shim found in the `--shims` directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundShim {
    pub engine: String,
    pub file_name: String,
    pub path: PathBuf,
}

/// A binary the installer wrote, as recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledBinary {
    pub path: PathBuf,
    /// sha256 of what the installer wrote.
    pub sha256: String,
    /// Where a different file that was there before was moved to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
}

/// Regular files named `containerd-shim-<engine>-v1` in `dir`, sorted by name.
pub fn find_shims(dir: &Path) -> Result<Vec<FoundShim>, BinaryError> {
    let entries = fs::read_dir(dir).map_err(|e| FsError::new("cannot list", dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| FsError::new("cannot list", dir, e))?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some(engine) = engine_of_shim_file(&file_name) else {
            continue;
        };
        let path = entry.path();
        // Follow symlinks: a packaged layout may link the shims.
        if fs::metadata(&path).map(|m| m.is_file()).unwrap_or(false) {
            found.push(FoundShim {
                engine: engine.to_string(),
                file_name,
                path,
            });
        }
    }
    found.sort_by(|a, b| a.file_name.cmp(&b.file_name));
    Ok(found)
}

/// What [`install_binary`] did (or would do, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The destination already holds identical bytes.
    Unchanged,
    /// The file was new.
    Copied,
    /// The installer's own earlier copy was replaced by a newer one.
    Updated,
    /// A different file that the installer did not write was moved aside to `backup`.
    Replaced { backup: PathBuf },
}

pub fn backup_path(dest: &Path) -> PathBuf {
    let mut name = dest.as_os_str().to_owned();
    name.push(".wasmrunner.bak");
    PathBuf::from(name)
}

/// Copies `src` to `dest` (mode 0755, atomically). `previous` is the state's record of an earlier
/// install of the same destination. Returns the outcome and the record to keep (`None` when the
/// destination is not the installer's: an identical file that was already there).
pub fn install_binary(
    src: &Path,
    dest: &Path,
    previous: Option<&InstalledBinary>,
    dry_run: bool,
) -> Result<(CopyOutcome, Option<InstalledBinary>), BinaryError> {
    let bytes = read_optional(src)?.ok_or_else(|| BinaryError::Missing(src.to_path_buf()))?;
    let sha256 = sha256_hex(&bytes);
    let current = read_optional(dest)?;
    let current_sha = current.as_deref().map(sha256_hex);

    if current_sha.as_deref() == Some(sha256.as_str()) {
        // Keep owning a file we wrote earlier; a foreign identical file stays foreign.
        let record = previous.filter(|p| p.sha256 == sha256).cloned();
        return Ok((CopyOutcome::Unchanged, record));
    }

    let ours_untouched = matches!((previous, &current_sha), (Some(p), Some(c)) if &p.sha256 == c);
    let (outcome, backup) = match (&current, ours_untouched) {
        (None, _) => (CopyOutcome::Copied, previous.and_then(|p| p.backup.clone())),
        (Some(_), true) => (
            CopyOutcome::Updated,
            previous.and_then(|p| p.backup.clone()),
        ),
        (Some(_), false) => {
            let backup = backup_path(dest);
            // An earlier backup holds the file from before the first install: keep that one.
            let have_older =
                previous.is_some_and(|p| p.backup.as_deref() == Some(&*backup)) && backup.is_file();
            if !dry_run && !have_older {
                fs::copy(dest, &backup).map_err(|e| FsError::new("cannot back up", dest, e))?;
            }
            (
                CopyOutcome::Replaced {
                    backup: backup.clone(),
                },
                Some(backup),
            )
        }
    };
    if !dry_run {
        atomic_write(dest, &bytes, Some(0o755))?;
    }
    Ok((
        outcome,
        Some(InstalledBinary {
            path: dest.to_path_buf(),
            sha256,
            backup,
        }),
    ))
}

/// What [`remove_binary`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoveOutcome {
    Removed,
    /// Removed, and the file that was there before the install was put back.
    Restored,
    /// Already gone.
    Missing,
    /// Changed since the install: left in place.
    ChangedSinceInstall,
}

/// Removes a binary the installer wrote, if it is still what the installer wrote.
pub fn remove_binary(
    record: &InstalledBinary,
    dry_run: bool,
) -> Result<RemoveOutcome, BinaryError> {
    let current = read_optional(&record.path)?;
    match current {
        None => Ok(RemoveOutcome::Missing),
        Some(bytes) if sha256_hex(&bytes) != record.sha256 => {
            Ok(RemoveOutcome::ChangedSinceInstall)
        }
        Some(_) => {
            let backup = record.backup.as_deref().filter(|b| b.is_file());
            if dry_run {
                return Ok(if backup.is_some() {
                    RemoveOutcome::Restored
                } else {
                    RemoveOutcome::Removed
                });
            }
            match backup {
                Some(backup) => {
                    fs::rename(backup, &record.path)
                        .map_err(|e| FsError::new("cannot restore", &record.path, e))?;
                    Ok(RemoveOutcome::Restored)
                }
                None => {
                    fsutil::remove_optional(&record.path)?;
                    Ok(RemoveOutcome::Removed)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let shims = dir.path().join("shims");
        let bin = dir.path().join("bin");
        fs::create_dir_all(&shims).unwrap();
        fs::create_dir_all(&bin).unwrap();
        (dir, shims, bin)
    }

    #[test]
    fn finds_only_v1_shim_files() {
        let (_dir, shims, _bin) = setup();
        fs::write(shims.join("containerd-shim-wasmtime-v1"), b"a").unwrap();
        fs::write(shims.join("containerd-shim-runc-v2"), b"b").unwrap();
        fs::write(shims.join("wasmrunner-installer"), b"c").unwrap();
        fs::create_dir(shims.join("containerd-shim-dir-v1")).unwrap();
        let found = find_shims(&shims).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].engine, "wasmtime");
    }

    #[test]
    fn copy_skip_update_and_remove() {
        let (_dir, shims, bin) = setup();
        let src = shims.join("containerd-shim-wasmtime-v1");
        let dest = bin.join("containerd-shim-wasmtime-v1");
        fs::write(&src, b"v1").unwrap();

        let (outcome, record) = install_binary(&src, &dest, None, false).unwrap();
        assert_eq!(outcome, CopyOutcome::Copied);
        let record = record.unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"v1");
        assert_eq!(
            fs::metadata(&dest).unwrap().permissions().mode() & 0o777,
            0o755
        );

        let (outcome, again) = install_binary(&src, &dest, Some(&record), false).unwrap();
        assert_eq!(outcome, CopyOutcome::Unchanged);
        assert_eq!(again.as_ref(), Some(&record));

        fs::write(&src, b"v2").unwrap();
        let (outcome, record) = install_binary(&src, &dest, Some(&record), false).unwrap();
        assert_eq!(outcome, CopyOutcome::Updated);
        let record = record.unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"v2");

        assert_eq!(
            remove_binary(&record, false).unwrap(),
            RemoveOutcome::Removed
        );
        assert!(!dest.exists());
        assert_eq!(
            remove_binary(&record, false).unwrap(),
            RemoveOutcome::Missing
        );
    }

    #[test]
    fn foreign_identical_file_is_not_owned() {
        let (_dir, shims, bin) = setup();
        let src = shims.join("containerd-shim-wasmtime-v1");
        let dest = bin.join("containerd-shim-wasmtime-v1");
        fs::write(&src, b"same").unwrap();
        fs::write(&dest, b"same").unwrap();
        let (outcome, record) = install_binary(&src, &dest, None, false).unwrap();
        assert_eq!(outcome, CopyOutcome::Unchanged);
        assert_eq!(record, None);
    }

    #[test]
    fn foreign_different_file_is_backed_up_and_restored() {
        let (_dir, shims, bin) = setup();
        let src = shims.join("containerd-shim-wasmtime-v1");
        let dest = bin.join("containerd-shim-wasmtime-v1");
        fs::write(&src, b"ours").unwrap();
        fs::write(&dest, b"theirs").unwrap();
        let (outcome, record) = install_binary(&src, &dest, None, false).unwrap();
        assert!(matches!(outcome, CopyOutcome::Replaced { .. }));
        let record = record.unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"ours");
        assert_eq!(
            remove_binary(&record, false).unwrap(),
            RemoveOutcome::Restored
        );
        assert_eq!(fs::read(&dest).unwrap(), b"theirs");
        assert!(!backup_path(&dest).exists());
    }

    #[test]
    fn changed_file_is_left_alone() {
        let (_dir, shims, bin) = setup();
        let src = shims.join("containerd-shim-wasmtime-v1");
        let dest = bin.join("containerd-shim-wasmtime-v1");
        fs::write(&src, b"ours").unwrap();
        let (_, record) = install_binary(&src, &dest, None, false).unwrap();
        fs::write(&dest, b"someone else's").unwrap();
        assert_eq!(
            remove_binary(&record.unwrap(), false).unwrap(),
            RemoveOutcome::ChangedSinceInstall
        );
        assert!(dest.exists());
    }

    #[test]
    fn dry_run_writes_nothing() {
        let (_dir, shims, bin) = setup();
        let src = shims.join("containerd-shim-wasmtime-v1");
        let dest = bin.join("containerd-shim-wasmtime-v1");
        fs::write(&src, b"x").unwrap();
        let (outcome, _) = install_binary(&src, &dest, None, true).unwrap();
        assert_eq!(outcome, CopyOutcome::Copied);
        assert!(!dest.exists());
    }
}
