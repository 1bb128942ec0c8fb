#!/usr/bin/env bash
# Compile the WASM executor's C test programs to wasm32-wasi with Debian's clang, lld and
# wasi-libc (installed by packaging/setup-host.sh). Usage: build.sh OUT_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: build.sh OUT_DIR}"
mkdir -p "$out"
for src in "$here"/*.c; do
  clang --target=wasm32-wasi --sysroot=/usr -O2 -o "$out/$(basename "${src%.c}").wasm" "$src"
done
