#!/usr/bin/env bash
# Builds dist/meshdesk_<version>_amd64.deb for Debian 12 / Ubuntu 23.04+ (their Python 3.11):
#
#   /opt/meshdesk/venv          MeshDesk and its dependencies in a virtual environment on
#                               /usr/bin/python3.11, with the RPC-enabled llama-cpp-python
#                               wheel from scripts/llama_wheel.sh (built once, then cached)
#   /usr/bin/meshdesk           -> /opt/meshdesk/venv/bin/meshdesk
#   /usr/share/applications/meshdesk.desktop   the launcher (also opens meshdesk:// links)
#   /usr/share/icons/hicolor/NxN/apps/meshdesk.png
#   /usr/share/doc/meshdesk/copyright
#
# Install: sudo apt install ./dist/meshdesk_<version>_amd64.deb (or double-click it).
# Uninstall: sudo apt remove meshdesk. Each user's data (~/.local/share/MeshDesk) and a
# start-at-login entry (~/.config/autostart/meshdesk.desktop) stay: the app's Settings remove
# the latter, and no package may touch home folders.
#
#   installers/linux/build_deb.sh                # the full package (a few minutes)
#   installers/linux/build_deb.sh --quick        # everything but the virtual environment, into
#                                                # build/deb-quick/ (seconds; for the tests)
#   installers/linux/build_deb.sh --out DIR      # write the .deb into DIR
#
# Needs: dpkg-deb, /usr/bin/python3.11 with venv (apt: python3.11-venv), and PyPI (pip).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
QUICK=0
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --out) OUT=${2:?--out needs a folder}; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build_deb.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT" ]; then
  if [ "$QUICK" = 1 ]; then OUT="$ROOT/build/deb-quick"; else OUT="$ROOT/dist"; fi
fi

PYTHON=/usr/bin/python3.11   # the interpreter the package depends on
PREFIX=/opt/meshdesk
ARCH=amd64
command -v dpkg-deb >/dev/null || { echo "build_deb.sh: dpkg-deb is missing (apt install dpkg)" >&2; exit 1; }
READER=$PYTHON
if [ ! -x "$PYTHON" ]; then
  # --quick only reads pyproject.toml; the package itself is built on Debian's Python 3.11.
  [ "$QUICK" = 1 ] || { echo "build_deb.sh: $PYTHON is missing (apt install python3.11-venv)" >&2; exit 1; }
  READER=python3
fi
VERSION=$("$READER" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$ROOT/pyproject.toml")

# Runtime libraries: llama.cpp's (libgomp1, libstdc++6) and what Qt's xcb and wayland platform
# plugins load from the system (PySide6-Essentials carries Qt itself). Read off `ldd` of the
# wheels' libraries; briefcase.toml's linux.system.debian list is the same.
DEPENDS="python3.11 (>= 3.11.2), libgomp1, libstdc++6, libgl1, libegl1, libfontconfig1, libfreetype6,
 libglib2.0-0, libdbus-1-3, libx11-6, libx11-xcb1, libxcb1, libxcb-cursor0, libxcb-glx0,
 libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render0,
 libxcb-render-util0, libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-util1, libxcb-xfixes0,
 libxcb-xkb1, libxkbcommon0, libxkbcommon-x11-0, libwayland-client0, libwayland-cursor0,
 libwayland-egl1"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshdesk-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
PKG="$WORK/root"
install -d -m 755 "$PKG" "$PKG/DEBIAN" "$PKG/usr/bin" "$PKG$PREFIX"

# --- the application ----------------------------------------------------------------------
if [ "$QUICK" = 0 ]; then
  VENV="$PKG$PREFIX/venv"
  echo "Creating the virtual environment on $PYTHON..." >&2
  "$PYTHON" -m venv "$VENV"
  wheel=$(bash "$ROOT/scripts/llama_wheel.sh" "$VENV/bin/python")
  echo "Using $wheel" >&2
  # Build MeshDesk from a copy, so that the checkout gets no build/ or egg-info of pip's.
  install -d "$WORK/src"
  cp -a "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/meshdesk" "$WORK/src/"
  [ -f "$ROOT/LICENSE" ] && cp -a "$ROOT/LICENSE" "$WORK/src/"
  find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
  echo "Installing MeshDesk and its dependencies..." >&2
  "$VENV/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check \
    --only-binary llama-cpp-python "$wheel" "$WORK/src"
  "$VENV/bin/python" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)' \
    || { echo "build_deb.sh: $wheel has no RPC backend" >&2; exit 1; }
  # No pip at run time: nobody should install into a package's tree.
  "$VENV/bin/python" -m pip uninstall --quiet --yes pip setuptools >/dev/null 2>&1 || true
  rm -f "$VENV"/bin/activate* "$VENV"/bin/Activate.ps1 "$VENV"/bin/pip* "$VENV"/lib/python3.11/site-packages/meshdesk-*.dist-info/direct_url.json
  find "$VENV" -name __pycache__ -prune -exec rm -rf {} +
  # The environment was built under $PKG; its scripts and pyvenv.cfg must name /opt/meshdesk.
  grep -rlI --null "$PKG" "$VENV" | xargs -0 -r sed -i "s#$PKG##g"
  if grep -rqI "$WORK" "$VENV"; then
    echo "build_deb.sh: the environment still names the build folder:" >&2
    grep -rlI "$WORK" "$VENV" >&2
    exit 1
  fi
  # Byte-code now, recorded under its installed path (users can't write into /opt).
  echo "Compiling byte-code..." >&2
  "$PYTHON" -m compileall -q -j 0 -s "$PKG" -p / "$VENV/lib" >/dev/null || true
fi
ln -s "$PREFIX/venv/bin/meshdesk" "$PKG/usr/bin/meshdesk"

# --- desktop integration and documentation -----------------------------------------------------
install -D -m 644 "$HERE/meshdesk.desktop" "$PKG/usr/share/applications/meshdesk.desktop"
for size in 16 32 48 64 128 256 512; do
  icon="$ROOT/resources/meshdesk-$size.png"
  [ -f "$icon" ] || { echo "build_deb.sh: $icon is missing (run installers/icons.py)" >&2; exit 1; }
  install -D -m 644 "$icon" "$PKG/usr/share/icons/hicolor/${size}x${size}/apps/meshdesk.png"
done
install -d -m 755 "$PKG/usr/share/doc/meshdesk"
{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: MeshDesk"
  echo "Source: https://meshdesk.org"
  echo
  echo "Files: *"
  echo "Copyright: The MeshDesk developers"
  echo "License: MIT"
  if [ -f "$ROOT/LICENSE" ]; then sed 's/^$/./; s/^/ /' "$ROOT/LICENSE"; fi
  echo
  echo "Files: opt/meshdesk/venv/lib/python3.11/site-packages/*"
  echo "Copyright: their authors; see each package's *.dist-info folder"
  echo "License: various (see each package's *.dist-info folder)"
} > "$PKG/usr/share/doc/meshdesk/copyright"
chmod 644 "$PKG/usr/share/doc/meshdesk/copyright"
cat <<CHANGELOG | gzip -9n > "$PKG/usr/share/doc/meshdesk/changelog.gz"
meshdesk ($VERSION) unstable; urgency=medium

  * MeshDesk $VERSION; see https://meshdesk.org for its changes.

 -- The MeshDesk developers <team@meshdesk.org>  $(date -R -d "@${SOURCE_DATE_EPOCH:-$(stat -c %Y "$ROOT/pyproject.toml")}")
CHANGELOG
chmod 644 "$PKG/usr/share/doc/meshdesk/changelog.gz"

# --- package metadata -------------------------------------------------------------------
cat > "$PKG/DEBIAN/control" <<CONTROL
Package: meshdesk
Version: $VERSION
Architecture: $ARCH
Maintainer: The MeshDesk developers <team@meshdesk.org>
Installed-Size: $(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
Depends: $(echo $DEPENDS)
Section: net
Priority: optional
Homepage: https://meshdesk.org
Description: pool friends' computers to run large language models
 MeshDesk forms a private mesh of friends' computers and runs a language model
 too large for any one of them across their memory with llama.cpp. Every
 computer serves an OpenAI-compatible API on 127.0.0.1:9337 and has a desktop
 window; the tray toggle donates the computer's spare capacity to the mesh.
CONTROL
# Removal also clears anything written into /opt/meshdesk after installation.
cat > "$PKG/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
case "$1" in
  remove|purge) rm -rf /opt/meshdesk ;;
esac
exit 0
POSTRM
chmod 755 "$PKG/DEBIAN/postrm"

mkdir -p "$OUT"
DEB="$OUT/meshdesk_${VERSION}_${ARCH}.deb"
echo "Packing $DEB..." >&2
dpkg-deb --root-owner-group -Zxz -z3 --threads-max="$(nproc)" --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
