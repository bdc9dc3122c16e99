#!/usr/bin/env bash
# Puts libwasmedge (0.14.1, from Debian trixie) and its runtime closure into a private prefix, for
# building and running containerd-shim-wasmedge-v1 on Debian 12, which packages no libwasmedge.
#
# trixie's libwasmedge needs glibc 2.38 and GCC 14's libstdc++, newer than bookworm's, so the
# libraries cannot simply go on LD_LIBRARY_PATH: the shim is linked to load them with the
# prefix's own dynamic loader (see engines/wasmedge/build.rs). The prefix therefore must sit at the
# same path at build and at run time. Nothing is installed system-wide.
#
# Layout of PREFIX (default /opt/wasmrunner/libwasmedge):
#   usr/include/wasmedge/        headers (WASMEDGE_INCLUDE_DIR=PREFIX/usr/include)
#   link/libwasmedge.so*         only libwasmedge, for wasmedge-sys's build script (WASMEDGE_LIB_DIR)
#   usr/lib64/ld-linux-x86-64.so.2  the loader the shim names as its interpreter
#   usr/lib/x86_64-linux-gnu/    the runtime closure (glibc, libstdc++, LLVM 19, ...), the shim's rpath
#   VERSION                      libwasmedge's Debian version, written last (marks a complete fetch)
# Usage: fetch-libwasmedge.sh [PREFIX]
set -euo pipefail

prefix=${1:-${WASMEDGE_PREFIX:-/opt/wasmrunner/libwasmedge}}
suite=${WASMEDGE_SUITE:-trixie}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ -s "$prefix/VERSION" ] && [ -e "$prefix/link/libwasmedge.so" ]; then
    echo "libwasmedge: $(cat "$prefix/VERSION") in $prefix (already fetched)"
    exit 0
fi
if ! command -v dpkg-deb >/dev/null || ! command -v apt-get >/dev/null; then
    echo "fetch-libwasmedge: needs apt-get and dpkg-deb (Debian or Ubuntu)" >&2
    exit 1
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/archives/partial"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" >"$work/sources.list"
apt_opts=(
    -o "Dir::Etc::SourceList=$work/sources.list"
    -o "Dir::Etc::SourceParts=/dev/null"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::State::status=/dev/null"
    -o "Dir::Cache::Archives=$work/archives"
    -o "APT::Get::List-Cleanup=0"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" -qq update
# The closure of the library and its headers: real packages only (virtual ones print as <name>).
mapfile -t packages < <(
    apt-cache "${apt_opts[@]}" depends --recurse --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances libwasmedge0 libwasmedge-dev |
        grep -v '^ ' | grep -v '<' | sort -u
)
echo "libwasmedge: fetching ${#packages[@]} packages from $suite: ${packages[*]}"
(cd "$work/archives" && apt-get "${apt_opts[@]}" -qq download "${packages[@]}")

rm -rf "$prefix.partial"
mkdir -p "$prefix.partial"
for deb in "$work"/archives/*.deb; do
    dpkg-deb -x "$deb" "$prefix.partial"
done
# libLLVM's RUNPATH is $ORIGIN/../lib; on Debian that is usr/lib/lib.
ln -sfn x86_64-linux-gnu "$prefix.partial/usr/lib/lib"
mkdir -p "$prefix.partial/link"
cp -P "$prefix.partial"/usr/lib/x86_64-linux-gnu/libwasmedge.so* "$prefix.partial/link/"
version=$(dpkg-deb -f "$work"/archives/libwasmedge0_*.deb Version)
rm -rf "$prefix"
mv "$prefix.partial" "$prefix"
echo "$version" >"$prefix/VERSION"
echo "libwasmedge: $version in $prefix ($(du -sh "$prefix" | cut -f1))"
