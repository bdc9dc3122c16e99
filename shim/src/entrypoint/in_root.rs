//! Opening a file of a container's rootfs from the host, the way the container will see it:
//! every path, symlinks and `..` included, is resolved inside the rootfs, never outside it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::sys::openat2_read;

/// Opens `path` (absolute, or relative to `cwd`) for reading, as seen from inside `rootfs`
/// (`openat2` with `RESOLVE_IN_ROOT`: a symlink to `/etc/shadow` in an image means the
/// image's own `/etc/shadow`). `None` when it does not exist or is not a regular file. A
/// FIFO is opened without waiting for a writer (`O_NONBLOCK`), then passed over.
pub fn open_regular(rootfs: &File, cwd: &Path, path: &Path) -> std::io::Result<Option<File>> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    let Ok(relative) = full.strip_prefix("/") else {
        return Ok(None);
    };
    let Some(file) = openat2_read(
        rootfs.as_raw_fd(),
        relative,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )?
    else {
        return Ok(None);
    };
    Ok(file.metadata()?.is_file().then_some(file))
}

/// Where the container's `execve`-like lookup of `arg0` looks, in order: the path itself
/// when it has a `/`, else each `PATH` directory and then the working directory (as
/// `crate::Workload` resolves the entrypoint inside the container).
pub fn candidates(arg0: &str, search_path: &str) -> Vec<PathBuf> {
    if arg0.is_empty() {
        return Vec::new();
    }
    if arg0.contains('/') {
        return vec![PathBuf::from(arg0)];
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(arg0))
        .chain(std::iter::once(PathBuf::from(arg0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn read(file: File) -> String {
        let mut text = String::new();
        let mut file = file;
        file.read_to_string(&mut text).expect("read");
        text
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let host = tempfile::tempdir().expect("tempdir");
        let outside = host.path().join("secret");
        std::fs::write(&outside, "host secret").expect("write");
        let rootfs = host.path().join("rootfs");
        std::fs::create_dir_all(rootfs.join("app")).expect("mkdir");
        std::fs::write(rootfs.join("secret"), "image file").expect("write");
        std::os::unix::fs::symlink("/secret", rootfs.join("app/abs-link")).expect("symlink");
        std::os::unix::fs::symlink(&outside, rootfs.join("app/host-link")).expect("symlink");
        std::os::unix::fs::symlink("../../../secret", rootfs.join("app/rel-link"))
            .expect("symlink");
        let root = File::open(&rootfs).expect("open rootfs");
        let cwd = Path::new("/app");
        for path in ["abs-link", "rel-link", "../../secret", "/app/abs-link"] {
            let file = open_regular(&root, cwd, Path::new(path))
                .expect("open")
                .unwrap_or_else(|| panic!("{path} not found"));
            assert_eq!(read(file), "image file", "{path} escaped the rootfs");
        }
        // The host path, read inside the root, names nothing there.
        assert!(
            open_regular(&root, cwd, Path::new("host-link"))
                .expect("open")
                .is_none(),
            "a link to a host path reached the host"
        );
        assert!(
            open_regular(&root, cwd, Path::new("/app"))
                .expect("open")
                .is_none(),
            "a directory is not a module"
        );
        assert!(
            open_regular(&root, cwd, Path::new("missing.wasm"))
                .expect("open")
                .is_none()
        );
    }

    #[test]
    fn bare_names_search_path_then_cwd() {
        assert_eq!(
            candidates("tool.wasm", "/bin::/usr/bin"),
            ["/bin/tool.wasm", "/usr/bin/tool.wasm", "tool.wasm"].map(PathBuf::from)
        );
        assert_eq!(candidates("./x.wasm", "/bin"), [PathBuf::from("./x.wasm")]);
        assert!(candidates("", "/bin").is_empty());
    }
}
