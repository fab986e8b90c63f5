#!/usr/bin/env bash
# Builds dist/meshdesk_<version>_amd64.deb: MeshDesk in a virtual environment under
# /opt/meshdesk, a `meshdesk` command, a desktop launcher that also opens meshdesk:// invite
# links, and the icon. For Debian 12 / Ubuntu 23.04+ (Python 3.11 from the system).
#
#   installers/linux/build_deb.sh            # full package (a few minutes; reuses the llama wheel cache)
#   installers/linux/build_deb.sh --quick    # launcher, desktop entry, icon and control only (for tests)
set -euo pipefail
cd "$(dirname "$0")/../.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
VERSION=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
ARCH=amd64
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
chmod 755 "$ROOT"
PREFIX=/opt/meshdesk

install -Dm644 installers/linux/meshdesk.desktop "$ROOT/usr/share/applications/meshdesk.desktop"
install -Dm644 resources/meshdesk.png "$ROOT/usr/share/icons/hicolor/256x256/apps/meshdesk.png"
install -d "$ROOT/usr/bin"
cat > "$ROOT/usr/bin/meshdesk" <<LAUNCHER
#!/bin/sh
# An invite link opened from a browser or file manager arrives as the only argument.
case "\${1:-}" in
  meshdesk://*) exec $PREFIX/venv/bin/meshdesk --join "\$1" ;;
esac
exec $PREFIX/venv/bin/meshdesk "\$@"
LAUNCHER
chmod 755 "$ROOT/usr/bin/meshdesk"

if [ "$QUICK" = 0 ]; then
  /usr/bin/python3 -m venv "$ROOT$PREFIX/venv"
  wheel=$(bash scripts/llama_wheel.sh /usr/bin/python3)
  "$ROOT$PREFIX/venv/bin/python" -m pip install --quiet --upgrade pip
  "$ROOT$PREFIX/venv/bin/python" -m pip install --quiet "$wheel" .
  # The venv was built under $ROOT; its scripts must name the installed location.
  grep -rlI "$ROOT$PREFIX" "$ROOT$PREFIX/venv" | xargs -r sed -i "s#$ROOT$PREFIX#$PREFIX#g"
fi

SIZE=$(du -sk "$ROOT" | cut -f1)
install -d "$ROOT/DEBIAN"
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: meshdesk
Version: $VERSION
Section: net
Priority: optional
Architecture: $ARCH
Depends: python3.11, libgl1, libegl1, libxkbcommon-x11-0, libxcb-cursor0, libdbus-1-3, libfontconfig1
Installed-Size: $SIZE
Maintainer: The MeshDesk developers <team@meshdesk.org>
Homepage: https://meshdesk.org
Description: pool friends' computers to run large language models
 MeshDesk forms a private mesh of friends' computers, splits a language model too large for
 any one of them across their memory with llama.cpp, and serves it on every machine through
 an OpenAI-compatible API on localhost:9337, with a desktop window and a tray icon.
CONTROL
cat > "$ROOT/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
command -v update-desktop-database >/dev/null && update-desktop-database -q /usr/share/applications || true
command -v gtk-update-icon-cache >/dev/null && gtk-update-icon-cache -q /usr/share/icons/hicolor || true
POSTINST
chmod 755 "$ROOT/DEBIAN/postinst"

DIST=${MESHDESK_DIST:-dist}
mkdir -p "$DIST"
OUT="$DIST/meshdesk_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group --build "$ROOT" "$OUT" >/dev/null
echo "$OUT"
