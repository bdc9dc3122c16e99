#!/usr/bin/env bash
# Sets up a Debian 12 machine to build wasmrunner and run its suites. Idempotent: what is
# already there is not installed again. Run as root (or with sudo).
#   - Debian packages: containerd + runc (the system containerd, 1.6.20 on bookworm), the
#     registry the registry tests start (docker-registry, and htpasswd from apache2-utils), and the
#     C libraries and tools runwasi's crates build against (libseccomp, dbus, protoc, clang);
#   - rustup targets wasm32-wasip1 and wasm32-wasip2 (for the fixture programs);
#   - libwasmedge 0.14.1 from Debian trixie in a private prefix, for the WasmEdge shim
#     (see scripts/fetch-libwasmedge.sh; Debian 12 packages no libwasmedge);
#   - with --containerd-matrix: containerd 1.7 and 2.x from Debian's newer suites, unpacked
#     under target/containerd (see test/containerd/fetch.sh).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)

packages=(
    containerd runc containernetworking-plugins
    docker-registry apache2-utils
    build-essential pkg-config protobuf-compiler
    libseccomp-dev libdbus-1-dev libsystemd-dev libclang-dev libzstd-dev libssl-dev libelf-dev
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: no Rust toolchain; install rustup (https://rustup.rs) and run this again" >&2
    exit 1
fi
# `make lint` (part of `make test`) needs rustfmt and clippy.
installed_components=$(rustup component list --installed)
for component in rustfmt clippy; do
    grep -q "^$component" <<<"$installed_components" || rustup component add "$component"
done
installed_targets=$(rustup target list --installed)
for target in wasm32-wasip1 wasm32-wasip2; do
    grep -qx "$target" <<<"$installed_targets" || rustup target add "$target"
done

"$here/scripts/fetch-libwasmedge.sh"

if [ "${1:-}" = "--containerd-matrix" ]; then
    "$here/test/containerd/fetch.sh" "$here/target/containerd"
fi
echo "setup: done"
