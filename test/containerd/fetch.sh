#!/usr/bin/env bash
# Fetches containerd releases newer than Debian 12's, from Debian's newer suites, into DEST:
#   DEST/<suite>/bin/{containerd,ctr,containerd-shim-runc-v2} and DEST/<suite>/VERSION
# Only the containerd package is unpacked (dpkg -x); nothing is installed system-wide, and
# bookworm's runc stays the one on PATH (the newer suites' runc needs a newer glibc).
# Usage: fetch.sh DEST [SUITE...]   (default suites: trixie sid)
set -euo pipefail

dest=${1:?usage: fetch.sh DEST [SUITE...]}
shift
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(trixie sid)
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for suite in "${suites[@]}"; do
    if [ -x "$dest/$suite/bin/containerd" ] && [ -s "$dest/$suite/VERSION" ]; then
        echo "containerd from $suite: $(cat "$dest/$suite/VERSION") (already fetched)"
        continue
    fi
    apt_dir="$work/$suite"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$apt_dir/root"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$apt_dir/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache::Archives=$apt_dir/archives"
        -o "APT::Get::List-Cleanup=0"
        -o "APT::Sandbox::User=root"
    )
    apt-get "${apt_opts[@]}" -qq update
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" -qq download containerd)
    deb=$(ls "$apt_dir"/containerd_*.deb)
    dpkg-deb -x "$deb" "$apt_dir/root"
    version=$(dpkg-deb -f "$deb" Version)
    mkdir -p "$dest/$suite/bin"
    for binary in containerd ctr containerd-shim-runc-v2; do
        install -m 0755 "$apt_dir/root/usr/bin/$binary" "$dest/$suite/bin/$binary"
    done
    echo "$version" >"$dest/$suite/VERSION"
    echo "containerd from $suite: $version"
done
