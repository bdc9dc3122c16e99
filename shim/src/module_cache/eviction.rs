//! The cache's size cap: least recently used entries go first.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The cap unless [`super::CACHE_MAX_BYTES_ENV`] says otherwise.
pub const DEFAULT_MAX_BYTES: u64 = 2 << 30;

/// A temporary file this old was left by a process that died while writing it.
const ABANDONED: Duration = Duration::from_secs(3600);

struct Entry {
    path: PathBuf,
    used: SystemTime,
    bytes: u64,
}

/// Removes the least recently used entries of an engine's cache (`<dir>/<key>/<sha256>`)
/// until they add up to at most `max_bytes`, never `keep` (just written, about to be used).
/// Containers that map a removed entry keep their mapping. Temporary files abandoned by a
/// dead writer go too. Returns how many entries were removed.
pub fn evict(dir: &Path, max_bytes: u64, keep: &Path) -> usize {
    let mut entries = Vec::new();
    for key in children(dir) {
        for path in children(&key) {
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let used = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let hidden = path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if hidden {
                let abandoned = path.extension().is_some_and(|ext| ext == "tmp")
                    && used.elapsed().is_ok_and(|age| age > ABANDONED);
                if abandoned {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
            if meta.is_file() {
                entries.push(Entry {
                    path,
                    used,
                    bytes: meta.len(),
                });
            }
        }
    }
    let mut total: u64 = entries.iter().map(|entry| entry.bytes).sum();
    entries.sort_by_key(|entry| entry.used);
    let mut removed = 0;
    for entry in entries {
        if total <= max_bytes {
            break;
        }
        if entry.path == keep {
            continue;
        }
        if std::fs::remove_file(&entry.path).is_ok() {
            total = total.saturating_sub(entry.bytes);
            removed += 1;
        }
    }
    removed
}

fn children(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    fn entry(dir: &Path, name: &str, bytes: usize, age_secs: u64) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, vec![0u8; bytes]).expect("write");
        let then = SystemTime::now() - Duration::from_secs(age_secs);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|file| file.set_modified(then))
            .expect("set mtime");
        path
    }

    #[test]
    fn the_least_recently_used_go_first_and_the_new_one_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::create_dir(&key).expect("mkdir");
        let oldest = entry(&key, "a", 100, 300);
        let older = entry(&key, "b", 100, 200);
        let recent = entry(&key, "c", 100, 100);
        let new = entry(&key, "d", 100, 400);
        let lock = entry(&key, ".d.lock", 0, 500);
        // 400 bytes against a cap of 250: the two oldest but `new` go.
        assert_eq!(evict(dir.path(), 250, &new), 2);
        assert!(!oldest.exists() && !older.exists());
        assert!(recent.exists() && new.exists() && lock.exists());
        // Under the cap, nothing goes.
        assert_eq!(evict(dir.path(), 250, &new), 0);
    }

    #[test]
    fn abandoned_temporary_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("key");
        std::fs::create_dir(&key).expect("mkdir");
        let abandoned = entry(&key, ".x.1.0.tmp", 10, 7200);
        let in_progress = entry(&key, ".y.1.1.tmp", 10, 1);
        evict(dir.path(), u64::MAX, Path::new("/none"));
        assert!(!abandoned.exists());
        assert!(in_progress.exists());
    }
}
