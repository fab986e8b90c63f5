#!/usr/bin/env bash
# Idempotent developer set-up: a virtual environment at .venv with MeshDesk installed
# editable, its test tools, and llama-cpp-python built with the RPC backend.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${1:-python3}
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  echo "Creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  wheel=$(bash scripts/llama_wheel.sh "$VENV/bin/python")
  "$VENV/bin/python" -m pip install --quiet "$wheel"
fi

"$VENV/bin/python" -m pip install --quiet -e ".[test]"

if ! "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)"; then
  echo "error: the installed llama-cpp-python has no RPC backend (llama_supports_rpc() is false)." >&2
  echo "Remove $VENV and the wheel cache printed by scripts/llama_wheel.sh, then run make setup again." >&2
  exit 1
fi
# The window's Qt xcb plugin needs system libraries a fresh Debian/Ubuntu install may lack:
# say which packages, once (MeshDesk itself then runs headless and prints the same hint).
if [ "$(uname -s)" = Linux ]; then
  "$VENV/bin/python" -m meshdesk.adapters.qt_probe --libraries || true
fi
# Qt Multimedia (the camera scan) will not even load without PulseAudio's client library. As
# root with apt (a CI machine, a container) it is installed, being small; otherwise, the hint.
if [ "$(uname -s)" = Linux ] && ! ldconfig -p 2>/dev/null | grep -q 'libpulse\.so\.0'; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends libpulse0 >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends libpulse0 >/dev/null 2>&1; } \
      || echo "The camera scan needs libpulse0, which apt could not install: apt install libpulse0"
  else
    echo "The camera scan needs PulseAudio's client library. On Debian/Ubuntu: sudo apt install libpulse0"
  fi
fi
# The NAT lab's routers (tests/nat_lab.py) masquerade with nftables' `nft`. As root with apt it
# is installed, being small; otherwise those tests skip, and one line says so.
if [ "$(uname -s)" = Linux ] && ! command -v nft >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1 \
      || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq --no-install-recommends nftables >/dev/null 2>&1; } \
      || echo "The NAT lab tests will skip: apt could not install nftables (apt install nftables)"
  else
    echo "The NAT lab tests will skip: they need root and nftables (sudo apt install nftables)"
  fi
fi
echo "Set-up complete: $VENV"
