#!/usr/bin/env bash
# Build (once) and print the path of a llama-cpp-python wheel with the RPC backend and
# portable CPU flags. The wheel lives in a cache outside the checkout, keyed by version and
# flags, so a fresh clone on the same machine reuses it. pip's own wheel cache ignores
# CMAKE_ARGS, which is why this exists.
set -euo pipefail

PYTHON=${1:-python3}
VERSION=0.3.36
FLAGS="-DGGML_RPC=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
KEY=$(printf '%s %s' "$VERSION" "$FLAGS" | sha256sum | cut -c1-12)
CACHE="${MESHDESK_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/meshdesk/wheels}/llama_cpp_python-$VERSION-$KEY"

existing=$(ls "$CACHE"/llama_cpp_python-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$existing" ]; then
  echo "$existing"
  exit 0
fi

mkdir -p "$CACHE"
staging=$(mktemp -d "$CACHE/.build.XXXXXX")
trap 'rm -rf "$staging"' EXIT
echo "Building llama-cpp-python $VERSION with RPC (about 11 minutes, once per machine)..." >&2
CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$PYTHON" -m pip wheel --no-deps --no-cache-dir --no-binary llama-cpp-python \
  -w "$staging" "llama-cpp-python==$VERSION" >&2
mv "$staging"/llama_cpp_python-*.whl "$CACHE"/
ls "$CACHE"/llama_cpp_python-*.whl | head -n 1
