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
echo "Set-up complete: $VENV"
