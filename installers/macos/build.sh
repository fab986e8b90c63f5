#!/usr/bin/env bash
# macOS: dist/MeshDesk-<version>.dmg holding MeshDesk.app, built by Briefcase.
#
#   installers/macos/build.sh                      # ad-hoc signed: runs on this Mac only
#   MESHDESK_MACOS_IDENTITY="Developer ID Application: ..." installers/macos/build.sh
#                                                  # signed with that identity and notarized
#                                                  # (MESHDESK_MACOS_NOTARIZE=0: not notarized)
#
# Needs: macOS 13+, Python 3.11+ as python3 (python.org or Homebrew), Xcode command line
# tools (xcode-select --install), CMake (brew install cmake), and the network: Briefcase
# clones its macOS app template from GitHub and downloads a Python support package and a
# stub binary; pip downloads MeshDesk's dependencies from PyPI.
#
# Steps:
#   1. Build llama-cpp-python 0.3.36 as a wheel with llama.cpp's RPC backend and Metal
#      (-DGGML_RPC=ON -DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON -DGGML_NATIVE=OFF), for
#      this Mac's architecture and macOS 13.0 (MACOSX_DEPLOYMENT_TARGET, the app's
#      min_os_version in briefcase.toml), once: it is cached in ~/Library/Caches/meshdesk.
#   2. Check that the wheel reports llama_supports_rpc().
#   3. installers/briefcase.py package macOS app: stage the project with briefcase.toml,
#      put the wheel in its wheels/ folder, and run Briefcase (create, build, package).
#      The .dmg is copied into dist/.
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(uname -s)" = Darwin ] || { echo "build.sh: this builds the macOS installer; run it on a Mac" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "build.sh: needs Python 3.11+ ($PYTHON is $("$PYTHON" --version 2>&1))" >&2; exit 1; }
command -v cmake >/dev/null || { echo "build.sh: needs CMake (brew install cmake)" >&2; exit 1; }
xcode-select -p >/dev/null 2>&1 || { echo "build.sh: needs the Xcode command line tools (xcode-select --install)" >&2; exit 1; }

VERSION=0.3.36
MIN_MACOS=13.0
ARCH=$(uname -m)   # arm64 or x86_64; briefcase.toml builds for this architecture only
FLAGS="-DGGML_RPC=ON -DGGML_METAL=ON -DGGML_METAL_EMBED_LIBRARY=ON -DGGML_NATIVE=OFF"
KEY=$(printf '%s %s %s %s' "$VERSION" "$FLAGS" "$MIN_MACOS" "$ARCH" | shasum -a 256 | cut -c1-12)
CACHE="${MESHDESK_WHEEL_CACHE:-$HOME/Library/Caches/meshdesk/wheels}/llama_cpp_python-$VERSION-macos-$KEY"

wheel=$(ls "$CACHE"/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "Building llama-cpp-python $VERSION with RPC and Metal for $ARCH, macOS $MIN_MACOS+..." >&2
  mkdir -p "$CACHE"
  staging=$(mktemp -d "$CACHE/.build.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  CMAKE_ARGS="$FLAGS" MACOSX_DEPLOYMENT_TARGET="$MIN_MACOS" ARCHFLAGS="-arch $ARCH" \
    CMAKE_BUILD_PARALLEL_LEVEL="$(sysctl -n hw.ncpu)" \
    "$PYTHON" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
    -w "$staging" "llama-cpp-python==$VERSION" >&2
  mv "$staging"/llama_cpp_python-*.whl "$CACHE"/
  wheel=$(ls "$CACHE"/llama_cpp_python-*.whl | head -n 1)
fi
echo "llama-cpp-python wheel: $wheel" >&2

check=$(mktemp -d)
"$PYTHON" -m venv "$check/venv"
"$check/venv/bin/python" -m pip install --quiet "$wheel"
"$check/venv/bin/python" -c 'import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)' \
  || { echo "build.sh: $wheel has no RPC backend" >&2; exit 1; }
rm -rf "$check"

# Ad-hoc signing needs no questions answered; a real identity leads to notarization, for
# which Briefcase asks for (and then stores) the notary credentials the first time.
sign=(--no-input --adhoc-sign)
if [ -n "${MESHDESK_MACOS_IDENTITY:-}" ]; then
  sign=(--identity "$MESHDESK_MACOS_IDENTITY")
  [ "${MESHDESK_MACOS_NOTARIZE:-1}" = 0 ] && sign+=(--no-notarize)
fi
"$PYTHON" installers/briefcase.py all macOS app --llama-wheel "$wheel" -- "${sign[@]}"
ls dist/*.dmg
