#!/usr/bin/env bash
# Prepare a Debian host for formnet: the packages it uses and the Podman settings this kind
# of VM needs. Idempotent; called by `make test` and `make demo`. Needs root for apt-get.
set -euo pipefail

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v clang >/dev/null || need+=(clang)
command -v wasm-ld >/dev/null || dpkg -s lld >/dev/null 2>&1 || need+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
dpkg -s libclang-rt-14-dev-wasm32 >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
command -v serf >/dev/null || need+=(serf)
# A local registry for the image pull tests (tests/test_images_cluster.py); its system service is
# not used (the tests start their own on 127.0.0.1).
command -v docker-registry >/dev/null || need+=(docker-registry)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup-host: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: need root to install ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bash "$(dirname "$0")/setup-podman.sh"
