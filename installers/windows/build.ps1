<#
.SYNOPSIS
Windows: dist\MeshDesk-<version>.msi, built by Briefcase.

.DESCRIPTION
Needs: Windows 10/11 x64, 64-bit Python 3.11+ (python.org), CMake, Visual Studio 2022 Build
Tools with "Desktop development with C++", and the network: Briefcase clones its Windows
app template from GitHub and downloads Python's embeddable package (python.org), a stub
binary and the WiX toolset; pip downloads MeshDesk's dependencies from PyPI.

Steps:
  1. Build llama-cpp-python 0.3.36 as a wheel with llama.cpp's RPC backend and portable x64
     flags (-DGGML_RPC=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON
     -DGGML_F16C=ON), plus -DGGML_CUDA=ON or -DGGML_VULKAN=ON with -Gpu; once, cached in
     %LOCALAPPDATA%\meshdesk\wheels.
  2. Check that the wheel reports llama_supports_rpc().
  3. installers\briefcase.py create windows app: stage the project with briefcase.toml, put
     the wheel in its wheels\ folder, and create the app with Briefcase.
  4. -Gpu cuda only: copy the CUDA runtime DLLs (cudart, cublas, cublasLt; redistributable)
     next to llama.cpp's DLLs in the app, so it runs without a CUDA toolkit.
  5. installers\briefcase.py package windows app: build MeshDesk.exe and the per-user .msi
     (no administrator rights needed to install); it is copied into dist\.

.PARAMETER Gpu
none (default, CPU), cuda (NVIDIA; needs the CUDA toolkit, CUDA_PATH) or vulkan (any GPU
with a Vulkan driver; needs the Vulkan SDK to build).

.PARAMETER Identity
SHA-1 thumbprint of a code-signing certificate in the user's certificate store. Without it
the .msi is unsigned, and SmartScreen warns before installing.

.PARAMETER Python
The Python 3.11+ to use (default: python).

.EXAMPLE
powershell -ExecutionPolicy Bypass -File installers\windows\build.ps1 -Gpu vulkan
#>
param(
    [ValidateSet("none", "cuda", "vulkan")] [string] $Gpu = "none",
    [string] $Identity = "",
    [string] $Python = "python"
)
$ErrorActionPreference = "Stop"
Set-StrictMode -Version Latest
Set-Location (Join-Path $PSScriptRoot "..\..")

function Invoke-Checked([string] $Exe, [string[]] $Arguments) {
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') failed (exit code $LASTEXITCODE)" }
}

& $Python -c "import sys, struct; sys.exit(sys.version_info < (3, 11) or struct.calcsize('P') != 8)"
if ($LASTEXITCODE -ne 0) { throw "needs 64-bit Python 3.11+ as '$Python' (python.org installer)" }
if (-not (Get-Command cmake -ErrorAction SilentlyContinue)) { throw "needs CMake (winget install Kitware.CMake)" }
$vswhere = Join-Path ${env:ProgramFiles(x86)} "Microsoft Visual Studio\Installer\vswhere.exe"
if (-not (Test-Path $vswhere)) { throw "needs Visual Studio 2022 Build Tools with 'Desktop development with C++'" }
if ($Gpu -eq "cuda" -and -not $env:CUDA_PATH) { throw "-Gpu cuda needs the CUDA toolkit (CUDA_PATH is not set)" }
if ($Gpu -eq "vulkan" -and -not $env:VULKAN_SDK) { throw "-Gpu vulkan needs the Vulkan SDK (VULKAN_SDK is not set)" }

# --- 1. the llama-cpp-python wheel with RPC ------------------------------------------------
$Version = "0.3.36"
$Flags = "-DGGML_RPC=ON -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
if ($Gpu -eq "cuda") { $Flags += " -DGGML_CUDA=ON" }
if ($Gpu -eq "vulkan") { $Flags += " -DGGML_VULKAN=ON" }
$sha = [System.Security.Cryptography.SHA256]::Create()
$digest = $sha.ComputeHash([System.Text.Encoding]::UTF8.GetBytes("$Version $Flags"))
$Key = (-join ($digest | ForEach-Object { $_.ToString("x2") })).Substring(0, 12)
$CacheRoot = if ($env:MESHDESK_WHEEL_CACHE) { $env:MESHDESK_WHEEL_CACHE } else { Join-Path $env:LOCALAPPDATA "meshdesk\wheels" }
$Cache = Join-Path $CacheRoot "llama_cpp_python-$Version-windows-$Key"

$wheel = Get-ChildItem -Path $Cache -Filter "llama_cpp_python-*.whl" -ErrorAction SilentlyContinue | Select-Object -First 1
if (-not $wheel) {
    Write-Host "Building llama-cpp-python $Version with $Flags (once; 15+ minutes)..."
    New-Item -ItemType Directory -Force -Path $Cache | Out-Null
    $staging = Join-Path $Cache (".build." + [guid]::NewGuid().ToString("N"))
    $env:CMAKE_ARGS = $Flags
    $env:CMAKE_BUILD_PARALLEL_LEVEL = $env:NUMBER_OF_PROCESSORS
    try {
        Invoke-Checked $Python @("-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "--no-binary",
            "llama-cpp-python", "-w", $staging, "llama-cpp-python==$Version")
        Move-Item -Path (Join-Path $staging "llama_cpp_python-*.whl") -Destination $Cache
    } finally {
        Remove-Item -Recurse -Force $staging -ErrorAction SilentlyContinue
        Remove-Item Env:CMAKE_ARGS -ErrorAction SilentlyContinue
    }
    $wheel = Get-ChildItem -Path $Cache -Filter "llama_cpp_python-*.whl" | Select-Object -First 1
}
Write-Host "llama-cpp-python wheel: $($wheel.FullName)"

# --- 2. it must have the RPC backend ---------------------------------------------------------
$check = Join-Path ([System.IO.Path]::GetTempPath()) ("meshdesk-check-" + [guid]::NewGuid().ToString("N"))
Invoke-Checked $Python @("-m", "venv", $check)
try {
    $checkPython = Join-Path $check "Scripts\python.exe"
    Invoke-Checked $checkPython @("-m", "pip", "install", "--quiet", $wheel.FullName)
    if ($Gpu -eq "cuda") { $env:PATH = (Join-Path $env:CUDA_PATH "bin") + ";" + $env:PATH }
    Invoke-Checked $checkPython @("-c", "import llama_cpp, sys; sys.exit(0 if llama_cpp.llama_supports_rpc() else 1)")
} finally {
    Remove-Item -Recurse -Force $check -ErrorAction SilentlyContinue
}

# --- 3. create the app ---------------------------------------------------------------------------
Invoke-Checked $Python @("installers\briefcase.py", "create", "windows", "app", "--llama-wheel", $wheel.FullName, "--", "--no-input")

# --- 4. CUDA runtime DLLs into the app -------------------------------------------------------
if ($Gpu -eq "cuda") {
    $lib = "build\briefcase\build\meshdesk\windows\app\src\app_packages\llama_cpp\lib"
    if (-not (Test-Path $lib)) { throw "no $lib in the created app" }
    foreach ($pattern in @("cudart64_*.dll", "cublas64_*.dll", "cublasLt64_*.dll")) {
        $found = Get-ChildItem -Path (Join-Path $env:CUDA_PATH "bin") -Filter $pattern
        if (-not $found) { throw "no $pattern in $env:CUDA_PATH\bin" }
        $found | Copy-Item -Destination $lib
    }
}

# --- 5. build and package --------------------------------------------------------------------------
$packageArgs = @("installers\briefcase.py", "package", "windows", "app", "--llama-wheel", $wheel.FullName, "--", "--no-input")
if ($Identity) { $packageArgs += @("--identity", $Identity) } else { $packageArgs += @("--adhoc-sign") }
Invoke-Checked $Python $packageArgs
Get-ChildItem dist\*.msi
