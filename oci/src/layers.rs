//! Turning the spec's files into layer blobs, per flavour.

use std::collections::BTreeMap;

use oci_spec::image::MediaType;

use crate::blob::Blob;
use crate::error::OciError;
use crate::media_types::{RUNWASI_WASM_LAYER, WASM_LAYER};
use crate::spec::{EntryKind, Flavour, ImageFile, ImageSpec, parent_dirs};
use crate::tarball::TarWriter;

/// The layers of the image, in manifest order. The spec must be validated.
pub(crate) fn build_layers(spec: &ImageSpec) -> Result<Vec<Blob>, OciError> {
    match spec.flavour {
        Flavour::Image => {
            let files: Vec<&ImageFile> = spec.files.iter().collect();
            Ok(vec![rootfs_layer(&files)?])
        }
        Flavour::CncfArtifact => {
            if let Some(file) = spec.files.iter().find(|f| !f.is_raw_layer()) {
                return Err(OciError::NotWasm {
                    path: file.path_in_image.clone(),
                    flavour: "cncf",
                });
            }
            spec.files
                .iter()
                .map(|file| raw_layer(WASM_LAYER, file))
                .collect()
        }
        Flavour::RunwasiArtifact => {
            let (wasm, plain): (Vec<&ImageFile>, Vec<&ImageFile>) =
                spec.files.iter().partition(|f| f.is_raw_layer());
            if wasm.is_empty() {
                return Err(OciError::NoWasmFiles { flavour: "runwasi" });
            }
            // Plain files go into one ordinary tar layer ahead of the wasm layers.
            let mut layers = Vec::with_capacity(wasm.len() + 1);
            if !plain.is_empty() {
                layers.push(rootfs_layer(&plain)?);
            }
            for file in wasm {
                layers.push(raw_layer(RUNWASI_WASM_LAYER, file)?);
            }
            Ok(layers)
        }
    }
}

/// A layer whose blob is the file's bytes as they are, of the flavour's `media_type` unless
/// the file says otherwise ([`ImageFile::raw_layer`]).
fn raw_layer(media_type: &str, file: &ImageFile) -> Result<Blob, OciError> {
    let raw = file.raw_layer.clone().unwrap_or_default();
    let media_type = raw.media_type.unwrap_or_else(|| media_type.to_owned());
    let mut blob = Blob::new(MediaType::Other(media_type), file.contents.clone())?;
    blob.declared_size = raw.declared_size;
    Ok(blob)
}

/// An uncompressed tar layer holding `files` and their parent directories.
fn rootfs_layer(files: &[&ImageFile]) -> Result<Blob, OciError> {
    Blob::new(MediaType::ImageLayer, rootfs_tar(files)?)
}

/// One entry of the layer tar, keyed by its path without the leading '/'.
enum Entry<'a> {
    Dir,
    File(&'a ImageFile),
}

fn rootfs_tar(files: &[&ImageFile]) -> Result<Vec<u8>, OciError> {
    // Sorted paths put every directory before its contents.
    let mut entries: BTreeMap<&str, Entry> = BTreeMap::new();
    for file in files {
        for dir in parent_dirs(&file.path_in_image) {
            entries.entry(relative(dir)).or_insert(Entry::Dir);
        }
        entries.insert(relative(&file.path_in_image), Entry::File(file));
    }
    let mut tar = TarWriter::new(Vec::new());
    for (path, entry) in entries {
        match entry {
            Entry::Dir => tar.dir(path)?,
            Entry::File(file) => match &file.kind {
                EntryKind::Regular => tar.file(path, file.mode, &file.contents)?,
                EntryKind::Directory => tar.dir_with_mode(path, file.mode)?,
                EntryKind::Symlink(target) => tar.symlink(path, target)?,
                EntryKind::Fifo => tar.fifo(path, file.mode)?,
            },
        }
    }
    tar.finish()
}

fn relative(path: &str) -> &str {
    path.trim_start_matches('/')
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::tarball::DIR_MODE;

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    #[test]
    fn rootfs_tar_has_parents_first_and_fixed_metadata() {
        let spec = ImageSpec::new("x", Flavour::Image)
            .file("/b/c/app.wasm", MODULE)
            .add_file(ImageFile::new("/a.txt", b"text".to_vec()).with_mode(0o644));
        let layers = build_layers(&spec).expect("layers");
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].media_type, MediaType::ImageLayer);

        let mut archive = tar::Archive::new(&layers[0].bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().expect("tar entries") {
            let mut entry = entry.expect("tar entry");
            let header = entry.header();
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let mode = header.mode().expect("mode");
            assert_eq!(header.mtime().expect("mtime"), 0);
            assert_eq!(header.uid().expect("uid"), 0);
            assert_eq!(header.gid().expect("gid"), 0);
            let is_dir = header.entry_type().is_dir();
            let mut contents = Vec::new();
            entry.read_to_end(&mut contents).expect("read");
            seen.push((
                path.trim_end_matches('/').to_owned(),
                is_dir,
                mode,
                contents,
            ));
        }
        let expected = vec![
            ("a.txt".to_owned(), false, 0o644, b"text".to_vec()),
            ("b".to_owned(), true, DIR_MODE, Vec::new()),
            ("b/c".to_owned(), true, DIR_MODE, Vec::new()),
            ("b/c/app.wasm".to_owned(), false, 0o755, MODULE.to_vec()),
        ];
        assert_eq!(seen, expected);
    }

    #[test]
    fn runwasi_puts_plain_files_in_a_tar_layer_first() {
        let spec = ImageSpec::new("x", Flavour::RunwasiArtifact)
            .file("/app.wasm", MODULE)
            .file("/data.txt", b"data".to_vec());
        let layers = build_layers(&spec).expect("layers");
        let types: Vec<String> = layers.iter().map(|l| l.media_type.to_string()).collect();
        assert_eq!(
            types,
            ["application/vnd.oci.image.layer.v1.tar", RUNWASI_WASM_LAYER]
        );
        assert_eq!(layers[1].bytes, MODULE);
    }

    #[test]
    fn special_entries_are_written_as_what_they_are() {
        let spec = ImageSpec::new("x", Flavour::Image)
            .add_file(ImageFile::symlink("/app/link.wasm", "/etc/passwd"))
            .add_file(ImageFile::fifo("/app/pipe.wasm"))
            .add_file(ImageFile::directory("/app/dir.wasm"))
            .file("/app/dir.wasm/inside", b"x".to_vec());
        let layers = build_layers(&spec).expect("layers");
        let mut archive = tar::Archive::new(&layers[0].bytes[..]);
        let mut seen = Vec::new();
        for entry in archive.entries().expect("tar entries") {
            let entry = entry.expect("tar entry");
            let path = entry.path().expect("path").to_string_lossy().into_owned();
            let link = entry
                .link_name()
                .expect("link name")
                .map(|l| l.to_string_lossy().into_owned());
            seen.push((
                path.trim_end_matches('/').to_owned(),
                entry.header().entry_type(),
                link,
            ));
        }
        assert_eq!(
            seen,
            vec![
                ("app".to_owned(), tar::EntryType::Directory, None),
                ("app/dir.wasm".to_owned(), tar::EntryType::Directory, None),
                (
                    "app/dir.wasm/inside".to_owned(),
                    tar::EntryType::Regular,
                    None
                ),
                (
                    "app/link.wasm".to_owned(),
                    tar::EntryType::Symlink,
                    Some("/etc/passwd".to_owned())
                ),
                ("app/pipe.wasm".to_owned(), tar::EntryType::Fifo, None),
            ]
        );
    }

    #[test]
    fn a_raw_layer_can_hold_anything_under_any_type_and_size() {
        let spec = ImageSpec::new("x", Flavour::RunwasiArtifact)
            .add_file(ImageFile::new("/text.wasm", b"not wasm".to_vec()).in_raw_layer(""))
            .add_file(ImageFile::new("/app.wasm", MODULE).declaring_size(1 << 30));
        let layers = build_layers(&spec).expect("layers");
        assert_eq!(layers.len(), 2);
        assert_eq!(layers[0].media_type.to_string(), "");
        assert_eq!(layers[0].bytes, b"not wasm");
        assert_eq!(layers[1].media_type.to_string(), RUNWASI_WASM_LAYER);
        assert_eq!(layers[1].size(), MODULE.len() as u64);
        assert_eq!(layers[1].descriptor().size(), 1 << 30);
    }

    #[test]
    fn runwasi_needs_a_wasm_file() {
        let spec = ImageSpec::new("x", Flavour::RunwasiArtifact).file("/data.txt", b"d".to_vec());
        assert!(matches!(
            build_layers(&spec),
            Err(OciError::NoWasmFiles { flavour: "runwasi" })
        ));
    }
}
