#!/usr/bin/env bash
# Install formnet on this host from this source tree (`make install` runs it):
#   - its own virtual environment in $PREFIX (default /opt/formnet), formnet and its Python
#     dependencies in it;
#   - `formd` and `form` on PATH: symlinks in $BINDIR (default /usr/local/bin);
#   - the systemd unit in $UNITDIR (default /etc/systemd/system) starting $PREFIX/bin/formd,
#     checked with `systemd-analyze verify` when that is installed;
#   - the host setup formd needs at run time (packaging/setup-host.sh --runtime: Podman, runc,
#     busybox-static and the Podman settings); FORMNET_HOST_SETUP=0 skips it.
# Idempotent: running it again upgrades formnet in place. packaging/uninstall.sh undoes it and
# leaves the node's state (/var/lib/formd) alone.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
source_dir=$(dirname "$here")
PREFIX=${PREFIX:-/opt/formnet}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
PYTHON=${PYTHON:-python3}
MARKER=.formnet-install  # in $PREFIX: this directory is ours to upgrade and to remove

if [ -e "$PREFIX" ] && [ ! -e "$PREFIX/$MARKER" ] && [ -n "$(ls -A "$PREFIX")" ]; then
  echo "install: $PREFIX exists and is not a formnet installation; choose another PREFIX" >&2
  exit 1
fi

if [ "${FORMNET_HOST_SETUP:-1}" != 0 ]; then
  bash "$here/setup-host.sh" --runtime
fi

echo "install: formnet into $PREFIX"
"$PYTHON" -m venv "$PREFIX"
touch "$PREFIX/$MARKER"
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
# A non-editable install, so the venv keeps working when this source tree moves or goes away,
# built from a copy: pip builds in the tree it is given and leaves build/ behind.
copy=$(mktemp -d)
trap 'rm -rf "$copy"' EXIT
tar -C "$source_dir" --exclude=./.git --exclude=./.venv --exclude=./build --exclude='*.egg-info' \
    --exclude=__pycache__ -cf - . | tar -C "$copy" -xf -
"$PREFIX/bin/python" -m pip install -q --disable-pip-version-check --upgrade "$copy"
mkdir -p "$PREFIX/share/doc/formnet"
cp "$source_dir/README.md" "$PREFIX/share/doc/formnet/README.md"

mkdir -p "$BINDIR"
for tool in formd form; do
  ln -sfn "$PREFIX/bin/$tool" "$BINDIR/$tool"
done

mkdir -p "$UNITDIR"
unit="$UNITDIR/formd.service"
sed -e "s|^ExecStart=/usr/local/bin/formd |ExecStart=$PREFIX/bin/formd |" \
    -e "s|^Documentation=.*|Documentation=file://$PREFIX/share/doc/formnet/README.md|" \
    -e "1i # Installed by formnet packaging/install.sh from $source_dir (PREFIX=$PREFIX)" \
    "$here/formd.service" > "$unit.tmp"
mv "$unit.tmp" "$unit"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit"
fi
if [ -d /run/systemd/system ] && [ "$UNITDIR" = /etc/systemd/system ]; then
  systemctl daemon-reload
fi

echo "install: formd and form in $BINDIR, the unit in $unit"
echo "install: next: formd init --listen 0.0.0.0:7946 ... (README: Deploy on three hosts), then"
echo "         systemctl enable --now formd"
