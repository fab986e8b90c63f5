# Windows: MeshDesk in an .msi, built by Briefcase. Run on Windows 10/11 with Python 3.11,
# Visual Studio Build Tools (C++) and CMake. llama-cpp-python is built with RPC first
# (add -DGGML_CUDA=ON or -DGGML_VULKAN=ON for a GPU build).
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
python -m venv build\briefcase-venv
build\briefcase-venv\Scripts\pip install --quiet briefcase
$env:CMAKE_ARGS = "-DGGML_RPC=ON -DGGML_NATIVE=OFF -DGGML_AVX2=ON"
build\briefcase-venv\Scripts\pip wheel --no-deps --no-binary llama-cpp-python `
  -w "$env:LOCALAPPDATA\meshdesk\wheels\windows" "llama-cpp-python==0.3.36"
$env:PATH = "$PWD\build\briefcase-venv\Scripts;$env:PATH"
python installers\briefcase_build.py --format msi --wheels "$env:LOCALAPPDATA\meshdesk\wheels"
