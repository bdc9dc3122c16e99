//! The only filesystem WASIX sees: the directories the pod's `wasmrunner.dev/files` grant
//! preopens, each reached beneath its own directory handle.
//!
//! WASIX walks a guest's path through its own inode graph (`.`, `..`, symlinks read with
//! `readlink` and resolved there) and then hands the filesystem a host path: the preopen's
//! directory joined with the components it walked. Wasmer's `host_fs` would open that path
//! from the process's `/`, and the kernel would follow any symlink in it, so a link inside a
//! narrow grant (made by another container sharing the volume, or raced in after WASIX
//! looked) could lead anywhere in the container's rootfs. Here every operation starts from
//! the granted directory's handle and resolves beneath it (cap-primitives: `openat2` with
//! `RESOLVE_BENEATH` where the kernel has it, a checked walk otherwise): a `..` or a symlink
//! that would leave the grant is an error, an absolute link is not followed, and a path
//! outside every grant reaches nothing. A read-only grant refuses every change here as well
//! as in WASIX's rights.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use cap_primitives::fs::{DirOptions, FileTypeExt as _, FollowSymlinks, Metadata as CapMetadata};
use cap_primitives::{ambient_authority, fs as cap};
use tokio::runtime::Handle;
use wasmer_wasix::virtual_fs::{
    self, DirEntry, FileOpener, FileType, FsError, Metadata, OpenOptions, OpenOptionsConfig,
    ReadDir, VirtualFile,
};
use wasmrunner_shim::capabilities::Files;

/// One granted directory.
#[derive(Debug)]
struct Grant {
    /// Its path in the container's filesystem, as WASIX names it in the paths it passes.
    path: PathBuf,
    /// The directory, opened once when the workload starts; every operation starts here.
    dir: fs::File,
    writable: bool,
}

#[derive(Debug)]
pub struct GrantedFiles {
    handle: Handle,
    /// Longest path first, so that a grant inside another is the one a path falls in.
    grants: Vec<Grant>,
}

impl GrantedFiles {
    /// Opens each granted directory (from the container's `/`, which the shim has already
    /// checked the grant against). `handle` is the runtime WASIX does its file I/O on.
    pub fn open(handle: Handle, files: &Files) -> io::Result<Self> {
        let mut grants = files
            .0
            .iter()
            .map(|preopen| {
                let path = PathBuf::from(&preopen.path);
                cap::open_ambient_dir(&path, ambient_authority())
                    .map(|dir| Grant {
                        path,
                        dir,
                        writable: preopen.writable,
                    })
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", preopen.path)))
            })
            .collect::<io::Result<Vec<_>>>()?;
        grants.sort_by_key(|grant| std::cmp::Reverse(grant.path.components().count()));
        Ok(Self { handle, grants })
    }

    /// The grant `path` falls in and the path relative to it (`.` for the grant itself).
    fn locate(&self, path: &Path) -> Result<(&Grant, PathBuf), FsError> {
        self.grants
            .iter()
            .find_map(|grant| {
                let rest = path.strip_prefix(&grant.path).ok()?;
                let rest = if rest.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    rest.to_path_buf()
                };
                Some((grant, rest))
            })
            .ok_or(FsError::PermissionDenied)
    }

    /// Like [`Self::locate`], for an operation that changes the grant.
    fn locate_writable(&self, path: &Path) -> Result<(&Grant, PathBuf), FsError> {
        let (grant, rest) = self.locate(path)?;
        if !grant.writable {
            return Err(FsError::PermissionDenied);
        }
        Ok((grant, rest))
    }
}

impl virtual_fs::FileSystem for GrantedFiles {
    /// The link's own text: WASIX resolves it in its graph, and a target outside the grants
    /// is not in that graph.
    fn readlink(&self, path: &Path) -> virtual_fs::Result<PathBuf> {
        let (grant, rest) = self.locate(path)?;
        Ok(cap::read_link_contents(&grant.dir, &rest)?)
    }

    fn read_dir(&self, path: &Path) -> virtual_fs::Result<ReadDir> {
        let (grant, rest) = self.locate(path)?;
        let mut entries = cap::read_dir(&grant.dir, &rest)?
            .map(|entry| {
                let entry = entry?;
                Ok(DirEntry {
                    path: path.join(entry.file_name()),
                    metadata: entry.metadata().map(metadata).map_err(FsError::from),
                })
            })
            .collect::<io::Result<Vec<_>>>()?;
        entries.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        Ok(ReadDir::new(entries))
    }

    fn create_dir(&self, path: &Path) -> virtual_fs::Result<()> {
        let (grant, rest) = self.locate_writable(path)?;
        Ok(cap::create_dir(&grant.dir, &rest, &DirOptions::new())?)
    }

    fn remove_dir(&self, path: &Path) -> virtual_fs::Result<()> {
        let (grant, rest) = self.locate_writable(path)?;
        Ok(cap::remove_dir(&grant.dir, &rest)?)
    }

    /// Within a grant, or between two on the same filesystem; never by copying.
    fn rename<'a>(
        &'a self,
        from: &'a Path,
        to: &'a Path,
    ) -> futures::future::BoxFuture<'a, virtual_fs::Result<()>> {
        Box::pin(async move {
            let (from_grant, from_rest) = self.locate_writable(from)?;
            let (to_grant, to_rest) = self.locate_writable(to)?;
            Ok(cap::rename(
                &from_grant.dir,
                &from_rest,
                &to_grant.dir,
                &to_rest,
            )?)
        })
    }

    fn metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        let (grant, rest) = self.locate(path)?;
        Ok(metadata(cap::stat(&grant.dir, &rest, FollowSymlinks::Yes)?))
    }

    fn symlink_metadata(&self, path: &Path) -> virtual_fs::Result<Metadata> {
        let (grant, rest) = self.locate(path)?;
        Ok(metadata(cap::stat(&grant.dir, &rest, FollowSymlinks::No)?))
    }

    fn remove_file(&self, path: &Path) -> virtual_fs::Result<()> {
        let (grant, rest) = self.locate_writable(path)?;
        Ok(cap::remove_file(&grant.dir, &rest)?)
    }

    fn new_open_options(&self) -> OpenOptions<'_> {
        OpenOptions::new(self)
    }
}

impl FileOpener for GrantedFiles {
    fn open(
        &self,
        path: &Path,
        conf: &OpenOptionsConfig,
    ) -> virtual_fs::Result<Box<dyn VirtualFile + Send + Sync + 'static>> {
        let changes = conf.write() || conf.append() || conf.create() || conf.create_new();
        let (grant, rest) = if changes || conf.truncate() {
            self.locate_writable(path)?
        } else {
            self.locate(path)?
        };
        // Truncate and append together is an error to `std` and cap-primitives; truncate
        // wins, as in Wasmer's own host filesystem.
        let append = conf.append() && !conf.truncate();
        let mut options = cap::OpenOptions::new();
        options
            .read(conf.read())
            .write(conf.write())
            .append(append)
            .truncate(conf.truncate())
            .create(conf.create())
            .create_new(conf.create_new());
        let file = cap::open(&grant.dir, &rest, &options)?;
        Ok(Box::new(virtual_fs::host_fs::File::new(
            self.handle.clone(),
            file,
            path.to_path_buf(),
            conf.read(),
            conf.write(),
            append,
        )))
    }
}

fn metadata(meta: CapMetadata) -> Metadata {
    let kind = meta.file_type();
    let nanos = |time: io::Result<cap_primitives::time::SystemTime>| {
        time.ok()
            .and_then(|time| time.into_std().duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_nanos() as u64)
    };
    Metadata {
        ft: FileType {
            dir: kind.is_dir(),
            file: kind.is_file(),
            symlink: kind.is_symlink(),
            char_device: kind.is_char_device(),
            block_device: kind.is_block_device(),
            socket: kind.is_socket(),
            fifo: kind.is_fifo(),
        },
        accessed: nanos(meta.accessed()),
        created: nanos(meta.created()),
        modified: nanos(meta.modified()),
        len: meta.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use virtual_fs::FileSystem as _;
    use wasmrunner_shim::capabilities::Preopen;

    fn grant(dir: &Path, writable: bool) -> Files {
        let path = dir.to_str().expect("a UTF-8 temp dir").to_string();
        Files(vec![Preopen {
            guest: path.clone(),
            path,
            writable,
        }])
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn reaches_only_beneath_the_grant() {
        let runtime = runtime();
        let outside = tempfile::tempdir().expect("a temp dir");
        std::fs::write(outside.path().join("secret"), "secret").expect("write");
        let granted = tempfile::tempdir().expect("a temp dir");
        std::fs::write(granted.path().join("mine"), "mine").expect("write");
        symlink(
            outside.path().join("secret"),
            granted.path().join("absolute"),
        )
        .expect("link");
        symlink(
            "../../../../../../../../etc/passwd",
            granted.path().join("up"),
        )
        .expect("link");
        let files = GrantedFiles::open(runtime.handle().clone(), &grant(granted.path(), false))
            .expect("open the grant");
        let read = |name: &str| {
            files
                .new_open_options()
                .read(true)
                .open(granted.path().join(name))
                .map(|_| ())
        };
        assert!(read("mine").is_ok());
        assert!(read("absolute").is_err(), "an absolute link was followed");
        assert!(read("up").is_err(), "a link out of the grant was followed");
        assert!(read("../secret").is_err(), "`..` left the grant");
        assert!(
            files.metadata(&outside.path().join("secret")).is_err(),
            "a path outside every grant was reached"
        );
        assert_eq!(
            files
                .readlink(&granted.path().join("absolute"))
                .expect("read the link"),
            outside.path().join("secret"),
            "readlink gives the link's own text, for WASIX to resolve in its graph"
        );
    }

    #[test]
    fn a_read_only_grant_changes_nothing() {
        let runtime = runtime();
        let granted = tempfile::tempdir().expect("a temp dir");
        std::fs::write(granted.path().join("mine"), "mine").expect("write");
        let files = GrantedFiles::open(runtime.handle().clone(), &grant(granted.path(), false))
            .expect("open the grant");
        let path = |name: &str| granted.path().join(name);
        assert!(
            files
                .new_open_options()
                .write(true)
                .open(path("mine"))
                .is_err()
        );
        assert!(
            files
                .new_open_options()
                .write(true)
                .create(true)
                .open(path("new"))
                .is_err()
        );
        assert!(files.create_dir(&path("dir")).is_err());
        assert!(files.remove_file(&path("mine")).is_err());
        assert!(path("mine").exists() && !path("new").exists() && !path("dir").exists());
    }

    #[test]
    fn a_writable_grant_is_written_beneath_it() {
        let runtime = runtime();
        let granted = tempfile::tempdir().expect("a temp dir");
        let files = GrantedFiles::open(runtime.handle().clone(), &grant(granted.path(), true))
            .expect("open the grant");
        let path = |name: &str| granted.path().join(name);
        files.create_dir(&path("dir")).expect("mkdir");
        files
            .new_open_options()
            .write(true)
            .create(true)
            .open(path("dir/file"))
            .expect("create a file");
        runtime
            .block_on(files.rename(&path("dir/file"), &path("moved")))
            .expect("rename");
        assert!(path("moved").is_file());
        let listed: Vec<_> = files
            .read_dir(granted.path())
            .expect("list")
            .map(|entry| entry.expect("an entry").path)
            .collect();
        assert_eq!(listed, vec![path("dir"), path("moved")]);
        assert!(files.metadata(&path("moved")).expect("stat").is_file());
    }
}
