//! Writing reproducible tar archives: fixed mtime, uid/gid 0, no user names.

use std::io::Write;

use tar::{Builder, EntryType, Header};

use crate::error::OciError;

/// Modification time of every entry (the Unix epoch), for reproducible output.
pub(crate) const FIXED_MTIME: u64 = 0;
/// `created` timestamp written into configs, matching [`FIXED_MTIME`].
pub(crate) const FIXED_CREATED: &str = "1970-01-01T00:00:00Z";
/// Mode of directory entries.
pub(crate) const DIR_MODE: u32 = 0o755;

/// A tar writer whose entries carry no host-specific metadata.
pub(crate) struct TarWriter<W: Write> {
    builder: Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            builder: Builder::new(out),
        }
    }

    /// Adds a directory entry; `path` is relative, without a trailing slash.
    pub fn dir(&mut self, path: &str) -> Result<(), OciError> {
        self.dir_with_mode(path, DIR_MODE)
    }

    /// Adds a directory entry with mode `mode`.
    pub fn dir_with_mode(&mut self, path: &str, mode: u32) -> Result<(), OciError> {
        let mut header = fixed_header(EntryType::Directory, mode, 0);
        self.builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| OciError::io(format!("writing tar entry {path}/"), e))
    }

    /// Adds a symbolic link to `target` (written as it is, long targets included).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), OciError> {
        let mut header = fixed_header(EntryType::Symlink, 0o777, 0);
        self.builder
            .append_link(&mut header, path, target)
            .map_err(|e| OciError::io(format!("writing tar entry {path} -> {target}"), e))
    }

    /// Adds a named pipe.
    pub fn fifo(&mut self, path: &str, mode: u32) -> Result<(), OciError> {
        let mut header = fixed_header(EntryType::Fifo, mode, 0);
        self.builder
            .append_data(&mut header, path, std::io::empty())
            .map_err(|e| OciError::io(format!("writing tar entry {path}"), e))
    }

    /// Adds a regular file; `path` is relative.
    pub fn file(&mut self, path: &str, mode: u32, contents: &[u8]) -> Result<(), OciError> {
        let mut header = fixed_header(EntryType::Regular, mode, contents.len() as u64);
        self.builder
            .append_data(&mut header, path, contents)
            .map_err(|e| OciError::io(format!("writing tar entry {path}"), e))
    }

    /// Writes the end-of-archive marker and returns the inner writer.
    pub fn finish(self) -> Result<W, OciError> {
        self.builder
            .into_inner()
            .map_err(|e| OciError::io("finishing tar archive", e))
    }
}

fn fixed_header(entry_type: EntryType, mode: u32, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(FIXED_MTIME);
    header.set_uid(0);
    header.set_gid(0);
    header
}
