//! The labels that tie a precompiled module to the layer it was compiled from.
//!
//! The scheme is runwasi's, so that caches written by runwasi shims and by ours are
//! interchangeable:
//!
//! * on the original layer's content: `runwasi.io/precompiled/<engine>/<cache key hash>` =
//!   the digest of the precompiled blob;
//! * on the precompiled blob: `runwasi.io/precompiled/<engine>/<cache key hash>/original` =
//!   the digest of the original layer;
//! * on the image's target (manifest or index): `runwasi.io/precompiled/<engine>/<hash>` =
//!   `true` (runwasi only looks at layer labels once it sees this one).
//!
//! To keep the precompiled blob alive, the original layer also gets a garbage-collection
//! reference, `containerd.io/gc.ref.content.<precompiled label>` = the precompiled digest:
//! containerd follows any label key that starts with `containerd.io/gc.ref.content` followed
//! by `.` or `/`, so the blob lives as long as the layer does. (runwasi numbers that label
//! by layer position instead, `containerd.io/gc.ref.content.precompile.<i>`, which lets two
//! engines overwrite each other's reference; keying it by the cache label does not.)

use std::hash::{DefaultHasher, Hash, Hasher};

/// The prefix of every precompiled-module label.
pub const PRECOMPILED_LABEL_PREFIX: &str = "runwasi.io/precompiled";

/// The prefix of containerd's garbage-collection references to content.
pub const GC_REF_CONTENT_PREFIX: &str = "containerd.io/gc.ref.content";

/// The label on a lease that makes containerd drop it after the given RFC 3339 time.
pub(crate) const GC_EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// The hash of a `Compiler::cache_key()`, as it appears in the label.
///
/// Like runwasi: the key is fed to `std::hash::DefaultHasher::new()` (SipHash-1-3 with fixed
/// keys, so the same on every run of the same toolchain) and the 64-bit result is written in
/// decimal.
pub fn cache_key_hash(key: impl Hash) -> String {
    let mut hasher = DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish().to_string()
}

/// `runwasi.io/precompiled/<engine_name>/<cache key hash>`: the label on a layer whose value
/// is the digest of that layer precompiled by this engine with this cache key.
pub fn precompiled_label(engine_name: &str, cache_key: impl Hash) -> String {
    format!(
        "{PRECOMPILED_LABEL_PREFIX}/{engine_name}/{}",
        cache_key_hash(cache_key)
    )
}

/// The label on a precompiled blob naming the layer it was compiled from.
pub fn original_label(precompiled_label: &str) -> String {
    format!("{precompiled_label}/original")
}

/// The garbage-collection reference put on the layer next to `precompiled_label`.
pub fn gc_ref_label(precompiled_label: &str) -> String {
    format!("{GC_REF_CONTENT_PREFIX}.{precompiled_label}")
}

/// `secs` seconds after the Unix epoch as an RFC 3339 UTC time, e.g. `2024-05-01T12:00:00Z`.
pub(crate) fn rfc3339_utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The proleptic Gregorian date `days` days after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_matches_runwasi() {
        // runwasi: format!("runwasi.io/precompiled/{name}/{}", DefaultHasher of the key, in decimal)
        let mut hasher = DefaultHasher::new();
        ("wasmtime", 48u32).hash(&mut hasher);
        let expected = format!("runwasi.io/precompiled/wasmtime/{}", hasher.finish());
        assert_eq!(precompiled_label("wasmtime", ("wasmtime", 48u32)), expected);
        assert_eq!(
            gc_ref_label(&expected),
            format!("containerd.io/gc.ref.content.{expected}")
        );
        assert_eq!(original_label("a/b"), "a/b/original");
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339_utc(4_107_542_399), "2100-02-28T23:59:59Z");
    }
}
