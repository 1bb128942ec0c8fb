#!/usr/bin/env bash
# Prepare a Debian host for formnet: the packages it uses and the Podman settings this kind
# of VM needs. Idempotent; called by `make test` and `make demo`. Needs root for apt-get.
#   --runtime   only what a node needs to run formd (packaging/install.sh): Podman, runc,
#               busybox-static (the base image jobs build FROM) and python3-venv; without it,
#               also the tools the tests and benchmarks use (the wasm32-wasi C toolchain, serf,
#               systemd-analyze).
set -euo pipefail

runtime_only=0
[ "${1:-}" = --runtime ] && runtime_only=1

need=()
command -v podman >/dev/null || need+=(podman)
command -v runc >/dev/null || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)  # make install, make venv
if [ "$runtime_only" = 0 ]; then
  command -v clang >/dev/null || need+=(clang)
  command -v wasm-ld >/dev/null || dpkg -s lld >/dev/null 2>&1 || need+=(lld)
  [ -f /usr/lib/wasm32-wasi/libc.a ] || need+=(wasi-libc)
  dpkg -s libclang-rt-14-dev-wasm32 >/dev/null 2>&1 || need+=(libclang-rt-14-dev-wasm32)
  command -v serf >/dev/null || need+=(serf)
  command -v systemd-analyze >/dev/null || need+=(systemd)  # checks the installed unit
  command -v ip >/dev/null || need+=(iproute2)              # namespace hosts (simulations/netns)
  command -v iptables >/dev/null || need+=(iptables)        # their delay and loss
  command -v chromium >/dev/null || need+=(chromium)        # the dashboard's browser test
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  command -v docker-registry >/dev/null || need+=(docker-registry)  # image pull tests (own 127.0.0.1 registry)
fi

if [ ${#need[@]} -gt 0 ]; then
  echo "setup-host: installing ${need[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "setup-host: need root to install ${need[*]} (run: sudo apt-get install ${need[*]})" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt run to finish instead of failing on its lock.
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bash "$(dirname "$0")/setup-podman.sh"
