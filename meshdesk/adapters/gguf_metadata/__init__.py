"""Validate a GGUF model file and read the metadata MeshDesk needs, in well under a second.

`gguf.GGUFReader` parses every value (a 262k-token vocabulary field by field) and takes
~17 s on a real model. This parser maps the file and walks the header once, skipping
values it does not need: fixed-size arrays in one step, string arrays by their lengths.
Tensor data is never read, so a 50 GB model costs the same as a small one.

Every problem with the file is reported as `ModelFileError`, whose message is one line.
Tensor shapes are in GGUF (ggml) order: the first dimension is the row length.
"""

from meshdesk.adapters.gguf_metadata.cursor import ModelFileError
from meshdesk.adapters.gguf_metadata.header import (ModelFileInfo, read_kv_bytes_per_token, read_model_info,
                                                    read_tensor_infos)
from meshdesk.adapters.gguf_metadata.tensor_table import TensorInfo

__all__ = ["ModelFileError", "ModelFileInfo", "TensorInfo", "read_kv_bytes_per_token", "read_model_info",
           "read_tensor_infos"]
