#!/usr/bin/env bash
# Remove what packaging/install.sh installed (`make uninstall` runs it), with the same PREFIX,
# BINDIR and UNITDIR: the unit (stopped and disabled first when systemd runs), the formd/form
# symlinks that point into $PREFIX, and $PREFIX itself when it carries install.sh's marker.
# The node's state (/var/lib/formd: keys, document, blobs) and the host setup stay.
set -euo pipefail

PREFIX=${PREFIX:-/opt/formnet}
BINDIR=${BINDIR:-/usr/local/bin}
UNITDIR=${UNITDIR:-/etc/systemd/system}
MARKER=.formnet-install

unit="$UNITDIR/formd.service"
if [ -f "$unit" ] && grep -q "^# Installed by formnet packaging/install.sh" "$unit"; then
  if [ -d /run/systemd/system ] && [ "$UNITDIR" = /etc/systemd/system ]; then
    systemctl disable --now formd.service || true
  fi
  rm -f "$unit"
  if [ -d /run/systemd/system ] && [ "$UNITDIR" = /etc/systemd/system ]; then
    systemctl daemon-reload
  fi
fi

for tool in formd form; do
  if [ -L "$BINDIR/$tool" ] && [ "$(readlink "$BINDIR/$tool")" = "$PREFIX/bin/$tool" ]; then
    rm -f "$BINDIR/$tool"
  fi
done

if [ -e "$PREFIX/$MARKER" ]; then
  rm -rf "$PREFIX"
elif [ -e "$PREFIX" ]; then
  echo "uninstall: $PREFIX is not a formnet installation; left alone" >&2
fi
echo "uninstall: formnet removed from $PREFIX (state in /var/lib/formd kept)"
