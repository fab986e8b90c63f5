#!/usr/bin/env bash
# macOS: MeshDesk.app in a .dmg, built by Briefcase. Run on a Mac (Apple Silicon or Intel)
# with Xcode command line tools and CMake. llama-cpp-python is built with Metal and RPC first.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv build/briefcase-venv
build/briefcase-venv/bin/pip install --quiet briefcase
export MESHDESK_LLAMA_FLAGS="-DGGML_RPC=ON -DGGML_METAL=ON -DGGML_NATIVE=OFF"
CMAKE_ARGS="$MESHDESK_LLAMA_FLAGS" build/briefcase-venv/bin/pip wheel --no-deps --no-binary llama-cpp-python \
  -w "$HOME/.cache/meshdesk/wheels/macos" "llama-cpp-python==0.3.36"
PATH="$PWD/build/briefcase-venv/bin:$PATH" python3 installers/briefcase_build.py --format dmg
