//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A core module header.
pub const MODULE: &[u8] = b"\0asm\x01\0\0\0";
/// A component header.
pub const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

/// The regular files of a tar archive, by path.
pub fn tar_files(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(bytes);
    let mut files = BTreeMap::new();
    for entry in archive.entries().expect("tar entries") {
        let mut entry = entry.expect("tar entry");
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().expect("path").to_string_lossy().into_owned();
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).expect("read entry");
        files.insert(path, contents);
    }
    files
}

/// Builds a tar archive from `(path, contents)` pairs.
pub fn make_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, *contents)
            .expect("append");
    }
    builder.into_inner().expect("finish tar")
}

pub fn sha256(bytes: &[u8]) -> String {
    let hex: String = Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

pub fn blob_path(digest: &str) -> String {
    format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))
}

pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("valid JSON")
}

/// The parsed blob a descriptor points to, after checking its digest and size.
pub fn follow<'a>(files: &'a BTreeMap<String, Vec<u8>>, descriptor: &Value) -> &'a [u8] {
    let digest = descriptor["digest"].as_str().expect("digest");
    let bytes = files
        .get(&blob_path(digest))
        .unwrap_or_else(|| panic!("blob {digest} missing"));
    assert_eq!(sha256(bytes), digest, "blob content matches its digest");
    assert_eq!(descriptor["size"].as_u64(), Some(bytes.len() as u64));
    bytes
}

/// A fresh path in the temporary directory (not created).
pub fn temp_path(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    std::env::temp_dir().join(format!(
        "wasm-oci-test-{}-{nanos}-{name}",
        std::process::id()
    ))
}
