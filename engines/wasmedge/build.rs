//! Links `containerd-shim-wasmedge-v1` against the libwasmedge that
//! `scripts/fetch-libwasmedge.sh` puts in a private prefix, and records its version.
//!
//! That libwasmedge comes from a newer Debian than the build machine and needs that Debian's
//! glibc and libstdc++: the binary is linked to start with the prefix's own dynamic loader and
//! to find its libraries through an rpath into the prefix. `WASMEDGE_PREFIX=system` (a
//! distribution whose own libwasmedge fits its libc) links plainly.

use std::path::{Path, PathBuf};

fn main() {
    for var in ["WASMEDGE_PREFIX", "WASMEDGE_INCLUDE_DIR"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let prefix = std::env::var("WASMEDGE_PREFIX").unwrap_or_else(|_| "system".to_string());
    let include = std::env::var_os("WASMEDGE_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));

    let header = include.join("wasmedge/version.h");
    println!("cargo:rerun-if-changed={}", header.display());
    let version = std::fs::read_to_string(&header)
        .ok()
        .and_then(|text| version_from_header(&text))
        .unwrap_or_else(|| {
            panic!(
                "cannot read WASMEDGE_VERSION from {}: run scripts/fetch-libwasmedge.sh, or point \
                 WASMEDGE_INCLUDE_DIR at libwasmedge's headers",
                header.display()
            )
        });
    println!("cargo:rustc-env=LIBWASMEDGE_VERSION={version}");

    if prefix != "system" {
        let prefix = Path::new(&prefix);
        let loader = prefix.join("usr/lib64/ld-linux-x86-64.so.2");
        let libs = prefix.join("usr/lib/x86_64-linux-gnu");
        if !loader.exists() {
            panic!(
                "{} is missing: run scripts/fetch-libwasmedge.sh {}",
                loader.display(),
                prefix.display()
            );
        }
        println!(
            "cargo:rustc-link-arg=-Wl,--dynamic-linker={}",
            loader.display()
        );
        println!(
            "cargo:rustc-link-arg=-Wl,--disable-new-dtags,-rpath,{}",
            libs.display()
        );
        // The prefix's libraries reference symbols of its newer glibc and libstdc++, which
        // the build machine's own copies (what the linker sees) lack; they resolve at run time.
        println!("cargo:rustc-link-arg=-Wl,--allow-shlib-undefined");
    }
}

fn version_from_header(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("#define WASMEDGE_VERSION "))
        .map(|value| value.trim().trim_matches('"').to_string())
        .next()
}
