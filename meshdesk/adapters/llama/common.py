"""What both llama.cpp children share: talking to their node, and llama.cpp's backend registry.

The RPC functions are not in llama-cpp-python's bindings, so they are reached the way
llama.cpp's own `--rpc` does: through the RPC backend's registry entry and proc addresses, on
the library handle llama-cpp-python itself loaded. Loading another copy of libggml would create
a second registry that llama.cpp never sees.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
import threading

CPU_DEVICE_TYPE = 0  # GGML_BACKEND_DEVICE_TYPE_CPU
GPU_DEVICE_TYPE = 1  # GGML_BACKEND_DEVICE_TYPE_GPU


def exit_when_parent_goes() -> None:
    """The node holds our stdin open; EOF means it is gone (even after SIGKILL)."""

    def watch() -> None:
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def announce(payload: dict) -> None:
    sys.stdout.write(json.dumps(payload) + "\n")
    sys.stdout.flush()


def ggml_library():
    import llama_cpp

    library = llama_cpp.llama_cpp._lib
    library.ggml_backend_reg_by_name.restype = ctypes.c_void_p
    library.ggml_backend_reg_by_name.argtypes = [ctypes.c_char_p]
    library.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    library.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    library.ggml_backend_register.argtypes = [ctypes.c_void_p]
    library.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    library.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    library.ggml_backend_dev_count.restype = ctypes.c_size_t
    library.ggml_backend_dev_get.restype = ctypes.c_void_p
    library.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    library.ggml_backend_dev_type.restype = ctypes.c_int
    library.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    library.ggml_backend_dev_name.restype = ctypes.c_char_p
    library.ggml_backend_dev_name.argtypes = [ctypes.c_void_p]
    library.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                                                ctypes.POINTER(ctypes.c_size_t)]
    return library


def compute_devices(library) -> list[int]:
    """This machine's GPUs where llama.cpp has a GPU backend for them, else its CPU."""
    devices = [library.ggml_backend_dev_get(index) for index in range(library.ggml_backend_dev_count())]
    gpus = [device for device in devices if library.ggml_backend_dev_type(device) == GPU_DEVICE_TYPE]
    return gpus or [library.ggml_backend_dev_by_type(CPU_DEVICE_TYPE)]


def describe_devices(library, devices: list[int]) -> dict:
    """Names and total memory; GPU memory is what such a node can give a model."""
    total = 0
    for device in devices:
        free, size = ctypes.c_size_t(), ctypes.c_size_t()
        library.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(size))
        total += size.value
    is_gpu = any(library.ggml_backend_dev_type(device) == GPU_DEVICE_TYPE for device in devices)
    return {"devices": [library.ggml_backend_dev_name(device).decode() for device in devices],
            "gpu_memory_bytes": total if is_gpu else None}


def rpc_function(library, name: str, prototype):
    registry = library.ggml_backend_reg_by_name(b"RPC")
    if not registry:
        raise RuntimeError("this llama.cpp build has no RPC backend (build it with -DGGML_RPC=ON)")
    address = library.ggml_backend_reg_get_proc_address(registry, name.encode())
    if not address:
        raise RuntimeError(f"llama.cpp's RPC backend has no {name}")
    return prototype(address)


def register_rpc_servers(endpoints: list[str]) -> None:
    """Makes each `127.0.0.1:port` an RPC device, in order, before the model loads."""
    library = ggml_library()
    add_server = rpc_function(library, "ggml_backend_rpc_add_server",
                              ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_char_p))
    for endpoint in endpoints:
        registry = add_server(endpoint.encode())
        if not registry:
            raise RuntimeError(f"llama.cpp could not add the RPC server {endpoint}")
        library.ggml_backend_register(registry)


def start_rpc_server(endpoint: str, threads: int, devices: list[int]) -> None:
    """Serves `devices` to one RPC client at a time; never returns."""
    library = ggml_library()
    start = rpc_function(library, "ggml_backend_rpc_start_server",
                         ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                                          ctypes.c_size_t, ctypes.POINTER(ctypes.c_void_p)))
    if not devices or not all(devices):
        raise RuntimeError("llama.cpp found no device to serve")
    array = (ctypes.c_void_p * len(devices))(*devices)
    start(endpoint.encode(), None, threads, len(devices), array)
