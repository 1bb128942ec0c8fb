#!/usr/bin/env bash
# Podman settings for hosts like this VM: crun fails under cgroups hybrid mode, runc works;
# the default rlimits try to raise NOFILE/NPROC past the hard limit, which is not permitted
# without CAP_SYS_RESOURCE, so containers get explicit ulimits at or below the host's.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "setup-podman: not root, leaving Podman settings as they are"; exit 0; }

hard_nofile=$(ulimit -Hn)
[ "$hard_nofile" = unlimited ] && hard_nofile=1048576
nofile=$(( hard_nofile < 20000 ? hard_nofile : 20000 ))
nproc=4096

conf_dir=/etc/containers/containers.conf.d
mkdir -p "$conf_dir"
conf="$conf_dir/50-formnet.conf"
# Written beside and renamed into place: a Podman starting meanwhile reads the old file or the
# new one, never a half-written one (and an unchanged file is left as it is).
cat > "$conf.tmp" <<CONF
# Written by formnet packaging/setup-podman.sh
[containers]
default_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
if cmp -s "$conf.tmp" "$conf"; then
  rm -f "$conf.tmp"
else
  mv "$conf.tmp" "$conf"
fi
