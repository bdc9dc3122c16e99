#!/usr/bin/env bash
# The demo: builds a hello-world Wasm image, starts a private containerd (its own root, state
# and socket in a temp dir, so it never touches a containerd you already run) and runs the
# image with each engine's shim: `ctr run --runtime io.containerd.wasmtime.v1` and
# `io.containerd.wasmedge.v1`.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bin="$here/target/release"
demo=$(mktemp -d "${TMPDIR:-/tmp}/wasmrunner-demo.XXXXXX")
image=docker.io/wasmrunner/hello:latest

containerd_pid=
cleanup() {
    if [ -n "$containerd_pid" ]; then
        kill "$containerd_pid" 2>/dev/null || true
        wait "$containerd_pid" 2>/dev/null || true
    fi
    rm -rf "$demo"
}
trap cleanup EXIT

echo "demo: building the hello module (wasm32-wasip1)"
CARGO_TARGET_DIR="$here/target/fixtures" cargo build --quiet --release \
    --manifest-path test/fixtures/Cargo.toml --target wasm32-wasip1 --bin hello
module="$here/target/fixtures/wasm32-wasip1/release/hello.wasm"

echo "demo: packaging it as an OCI image"
"$bin/wasm-oci" build --name "$image" -o "$demo/hello.tar" "$module"

echo "demo: starting a private containerd in $demo"
cat >"$demo/config.toml" <<TOML
version = 2
root = "$demo/root"
state = "$demo/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$demo/containerd.sock"
[ttrpc]
  address = "$demo/containerd.sock.ttrpc"
TOML
PATH="$bin:$PATH" containerd --config "$demo/config.toml" >"$demo/containerd.log" 2>&1 &
containerd_pid=$!
ctr=(ctr --address "$demo/containerd.sock")
for _ in $(seq 100); do
    "${ctr[@]}" version >/dev/null 2>&1 && break
    sleep 0.1
done

"${ctr[@]}" image import "$demo/hello.tar" >/dev/null
for engine in wasmtime wasmedge; do
    echo "demo: ctr run --rm --runtime io.containerd.$engine.v1 $image hello-$engine"
    echo "----"
    "${ctr[@]}" run --rm --runtime "io.containerd.$engine.v1" "$image" "hello-$engine"
    echo "----"
done
