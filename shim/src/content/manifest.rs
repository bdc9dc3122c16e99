//! From an image's target to the manifest whose layers the shim loads.

use oci_spec::image::{Arch, Descriptor, MediaType, Os};
use serde::Deserialize;

/// Docker's media types for the same documents (`oci-spec` has no names for them).
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The annotation buildx puts on attestation manifests in an index.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";

/// What a blob the image points at is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DocumentKind {
    Manifest,
    Index,
    Unknown,
}

/// Classifies a document by its descriptor's media type, or, when that says nothing, by
/// its own `mediaType` field and shape.
pub(crate) fn classify(media_type: &str, bytes: &[u8]) -> DocumentKind {
    match kind_of_media_type(media_type) {
        DocumentKind::Unknown => sniff(bytes),
        kind => kind,
    }
}

fn kind_of_media_type(media_type: &str) -> DocumentKind {
    if media_type == MediaType::ImageManifest.as_ref() || media_type == DOCKER_MANIFEST {
        DocumentKind::Manifest
    } else if media_type == MediaType::ImageIndex.as_ref() || media_type == DOCKER_MANIFEST_LIST {
        DocumentKind::Index
    } else {
        DocumentKind::Unknown
    }
}

/// Just enough of a manifest or an index to tell them apart.
#[derive(Deserialize)]
struct Shape {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
}

fn sniff(bytes: &[u8]) -> DocumentKind {
    let Ok(shape) = serde_json::from_slice::<Shape>(bytes) else {
        return DocumentKind::Unknown;
    };
    if let Some(kind) = shape
        .media_type
        .as_deref()
        .map(kind_of_media_type)
        .filter(|kind| *kind != DocumentKind::Unknown)
    {
        return kind;
    }
    match (shape.manifests.is_some(), shape.layers.is_some()) {
        (true, false) => DocumentKind::Index,
        (false, true) => DocumentKind::Manifest,
        _ => DocumentKind::Unknown,
    }
}

/// The entries of an index the shim may follow, best first: those for `wasi/wasm`, then any
/// other `wasm` architecture, then the host's Linux platform; an index with a single entry
/// offers just that one. Attestation manifests are not candidates. Empty when nothing fits
/// (a multi-platform image for other hosts).
pub(crate) fn ranked_manifests(manifests: &[Descriptor]) -> Vec<&Descriptor> {
    let candidates: Vec<&Descriptor> = manifests.iter().filter(|d| !is_attestation(d)).collect();
    if let [only] = candidates.as_slice() {
        return vec![*only];
    }
    let is_platform = |d: &Descriptor, os: Option<&Os>, arch: &Arch| {
        d.platform()
            .as_ref()
            .is_some_and(|p| p.architecture() == arch && os.is_none_or(|os| p.os() == os))
    };
    let wasi = Os::from("wasi");
    let host_arch = Arch::from(host_goarch());
    let mut ranked: Vec<&Descriptor> = Vec::new();
    let tiers: [&dyn Fn(&Descriptor) -> bool; 3] = [
        &|d| is_platform(d, Some(&wasi), &Arch::Wasm),
        &|d| is_platform(d, None, &Arch::Wasm),
        &|d| is_platform(d, Some(&Os::Linux), &host_arch),
    ];
    for fits in tiers {
        for candidate in &candidates {
            if fits(candidate) && !ranked.iter().any(|r| std::ptr::eq(*r, *candidate)) {
                ranked.push(candidate);
            }
        }
    }
    ranked
}

/// The first of `ranked` whose manifest containerd holds (`present`, one flag per entry):
/// a pull through CRI fetches only the node's platform of an index, so the wasm entry may be
/// missing while the native one is there. `None` when none is present.
pub(crate) fn first_present<'a>(
    ranked: &[&'a Descriptor],
    present: &[bool],
) -> Option<&'a Descriptor> {
    ranked
        .iter()
        .zip(present)
        .find_map(|(descriptor, present)| present.then_some(*descriptor))
}

/// `digest (os/arch)` of each entry, for an error message.
pub(crate) fn describe_entries(entries: &[&Descriptor]) -> String {
    entries
        .iter()
        .map(|d| match d.platform() {
            Some(p) => format!("{} ({}/{})", d.digest(), p.os(), p.architecture()),
            None => d.digest().to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An attestation or other non-runnable entry that buildx adds to indexes.
fn is_attestation(d: &Descriptor) -> bool {
    let annotated = d
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(DOCKER_REFERENCE_TYPE));
    let unknown_platform = d
        .platform()
        .as_ref()
        .is_some_and(|p| p.os().to_string() == "unknown");
    annotated || unknown_platform
}

/// This host's architecture as Go (and so OCI platforms) spells it.
fn host_goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::image::{DescriptorBuilder, Platform, PlatformBuilder};

    use super::*;

    fn descriptor(n: u8, platform: Option<(&str, &str)>) -> Descriptor {
        let digest = format!("sha256:{}", format!("{n:02x}").repeat(32));
        let mut builder = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .size(1u64)
            .digest(digest.parse::<oci_spec::image::Digest>().expect("digest"));
        if let Some((os, arch)) = platform {
            let platform: Platform = PlatformBuilder::default()
                .os(Os::from(os))
                .architecture(Arch::from(arch))
                .build()
                .expect("platform");
            builder = builder.platform(platform);
        }
        builder.build().expect("descriptor")
    }

    /// The entry the shim follows when every manifest is present.
    fn choose_manifest(list: &[Descriptor]) -> Option<&Descriptor> {
        ranked_manifests(list).first().copied()
    }

    #[test]
    fn prefers_wasi_wasm() {
        let list = [
            descriptor(1, Some(("linux", host_goarch()))),
            descriptor(2, Some(("wasip1", "wasm"))),
            descriptor(3, Some(("wasi", "wasm"))),
        ];
        assert_eq!(choose_manifest(&list), Some(&list[2]));
        assert_eq!(choose_manifest(&list[..2]), Some(&list[1]));
        assert_eq!(
            ranked_manifests(&list),
            vec![&list[2], &list[1], &list[0]],
            "wasm first, then the host's platform"
        );
    }

    #[test]
    fn takes_the_only_one_then_the_host() {
        let only = [descriptor(1, None)];
        assert_eq!(choose_manifest(&only), Some(&only[0]));

        let mut attestation = descriptor(3, Some(("unknown", "unknown")));
        attestation.set_annotations(Some(HashMap::from([(
            DOCKER_REFERENCE_TYPE.to_owned(),
            "attestation-manifest".to_owned(),
        )])));
        let with_attestation = [descriptor(2, Some(("linux", "s390x"))), attestation];
        assert_eq!(
            choose_manifest(&with_attestation),
            Some(&with_attestation[0])
        );

        let multi = [
            descriptor(4, Some(("linux", "s390x"))),
            descriptor(5, Some(("linux", host_goarch()))),
        ];
        assert_eq!(choose_manifest(&multi), Some(&multi[1]));

        let foreign = [
            descriptor(6, Some(("linux", "s390x"))),
            descriptor(7, Some(("windows", host_goarch()))),
        ];
        if host_goarch() != "s390x" {
            assert_eq!(choose_manifest(&foreign), None);
        }
        assert_eq!(choose_manifest(&[]), None);
    }

    /// CRI pulled only the node's platform of a `wasi/wasm` + `linux/<host>` index: the
    /// native manifest is followed. With both present, the wasm one; with none, nothing.
    #[test]
    fn follows_the_manifest_containerd_holds() {
        let list = [
            descriptor(1, Some(("wasi", "wasm"))),
            descriptor(2, Some(("linux", host_goarch()))),
        ];
        let ranked = ranked_manifests(&list);
        assert_eq!(first_present(&ranked, &[false, true]), Some(&list[1]));
        assert_eq!(first_present(&ranked, &[true, true]), Some(&list[0]));
        assert_eq!(first_present(&ranked, &[true, false]), Some(&list[0]));
        assert_eq!(first_present(&ranked, &[false, false]), None);
        let described = describe_entries(&ranked);
        assert!(
            described.contains("(wasi/wasm)")
                && described.contains(&format!("(linux/{})", host_goarch())),
            "{described}"
        );
    }

    #[test]
    fn classifies_documents() {
        let oci_manifest = MediaType::ImageManifest.to_string();
        assert_eq!(classify(&oci_manifest, b""), DocumentKind::Manifest);
        assert_eq!(classify(DOCKER_MANIFEST_LIST, b""), DocumentKind::Index);
        assert_eq!(
            classify("", br#"{"schemaVersion":2,"manifests":[]}"#),
            DocumentKind::Index
        );
        assert_eq!(
            classify("", br#"{"schemaVersion":2,"config":{},"layers":[]}"#),
            DocumentKind::Manifest
        );
        let tagged = format!(r#"{{"mediaType":"{oci_manifest}"}}"#);
        assert_eq!(classify("", tagged.as_bytes()), DocumentKind::Manifest);
        assert_eq!(classify("", b"not json"), DocumentKind::Unknown);
        assert_eq!(classify("text/plain", b"{}"), DocumentKind::Unknown);
    }
}
