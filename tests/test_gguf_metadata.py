import errno
import mmap
import os
import struct
import time
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType
from gguf.quants import quantize
from hypothesis import given, settings
from hypothesis import strategies as st

from meshdesk.adapters.gguf_metadata import ModelFileError, ModelFileInfo, read_model_info, read_tensor_infos

CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
F32 = GGMLQuantizationType.F32
Q8_0 = GGMLQuantizationType.Q8_0


def _values(*shape: int) -> np.ndarray:
    return np.linspace(-1.0, 1.0, num=int(np.prod(shape)), dtype=np.float32).reshape(shape)


# name, logical numpy shape, ggml type, bytes as stored in the file
TENSORS = [
    ("token_embd.weight", (3, 64), Q8_0, quantize(_values(3, 64), Q8_0)),
    ("blk.0.attn_norm.weight", (64,), F32, _values(64)),
    ("blk.0.ffn_up.weight", (2, 4, 8), F32, _values(2, 4, 8)),
    ("output.weight", (2, 32), Q8_0, quantize(_values(2, 32), Q8_0)),
]


def write_tiny_gguf(path: Path, alignment: int | None = None, with_tensors: bool = True) -> Path:
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny llama")
    writer.add_block_count(2)
    writer.add_context_length(128)
    writer.add_embedding_length(64)
    writer.add_expert_count(4)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_array("tokenizer.ggml.tokens", ["<s>", "a", "b"])
    writer.add_array("tokenizer.ggml.scores", [0.0, -1.0, -2.0])
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    for name, _shape, ggml_type, data in TENSORS if with_tensors else []:
        writer.add_tensor(name, data, raw_dtype=None if ggml_type == F32 else ggml_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def expected_data_bytes(alignment: int) -> int:
    padded = [-(-data.nbytes // alignment) * alignment for *_, data in TENSORS]
    return sum(padded[:-1]) + TENSORS[-1][3].nbytes


@pytest.fixture(scope="module")
def tiny_blob(tmp_path_factory) -> bytes:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf").read_bytes()


@pytest.fixture(scope="module")
def tiny_info(tmp_path_factory, tiny_blob) -> ModelFileInfo:
    path = tmp_path_factory.mktemp("tiny_info") / "tiny.gguf"
    path.write_bytes(tiny_blob)
    return read_model_info(path)


def assert_model_error(path: Path, expected: str) -> str:
    with pytest.raises(ModelFileError) as caught:
        read_model_info(path)
    message = str(caught.value)
    assert expected in message
    assert message.isprintable(), "a ModelFileError message must be one line"
    return message


def write_bytes(tmp_path: Path, blob: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(blob)
    return path


# --- valid files ----------------------------------------------------------------------------


@pytest.mark.parametrize("alignment", [None, 64])
def test_model_info_matches_what_was_written(tmp_path, alignment):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", alignment=alignment)
    info = read_model_info(path)

    assert info == ModelFileInfo(
        path=path,
        size_bytes=path.stat().st_size,
        gguf_version=3,
        architecture="llama",
        name="tiny llama",
        layer_count=2,
        context_length=128,
        expert_count=4,
        embedding_length=64,
        has_chat_template=True,
        tensor_count=len(TENSORS),
        tensor_data_offset=gguf.GGUFReader(path).data_offset,
        tensor_data_bytes=expected_data_bytes(alignment or 32),
    )
    assert info.tensor_data_offset % (alignment or 32) == 0


@pytest.mark.parametrize("alignment", [None, 64])
def test_tensor_table_matches_the_written_data(tmp_path, alignment):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", alignment=alignment)
    blob = path.read_bytes()
    tensors = read_tensor_infos(path)

    assert [t.name for t in tensors] == [name for name, *_ in TENSORS]
    for tensor, (_name, shape, ggml_type, data) in zip(tensors, TENSORS):
        assert tensor.shape == tuple(reversed(shape))  # GGUF lists the row length first
        assert tensor.ggml_type == ggml_type
        assert tensor.nbytes == data.nbytes
        assert tensor.offset % (alignment or 32) == 0
        assert blob[tensor.offset : tensor.offset + tensor.nbytes] == data.tobytes()


def test_tensor_table_agrees_with_gguf_reader(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    expected = [
        (t.name, tuple(int(d) for d in t.shape), int(t.tensor_type), int(t.data_offset), int(t.n_bytes))
        for t in gguf.GGUFReader(path).tensors
    ]
    assert [(t.name, t.shape, t.ggml_type, t.offset, t.nbytes) for t in read_tensor_infos(path)] == expected


def test_optional_keys_and_tensors_may_be_missing(tmp_path):
    writer = gguf.GGUFWriter(tmp_path / "bare.gguf", "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    info = read_model_info(tmp_path / "bare.gguf")

    assert (info.architecture, info.name, info.layer_count, info.context_length) == ("llama", None, None, None)
    assert (info.expert_count, info.embedding_length, info.has_chat_template) == (None, None, False)
    assert (info.tensor_count, info.tensor_data_bytes) == (0, 0)
    assert read_tensor_infos(tmp_path / "bare.gguf") == []


def test_accepts_a_string_path(tmp_path):
    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    assert read_model_info(str(path)).path == path


def test_reads_the_real_model_quickly(default_model_path):
    started = time.perf_counter()
    info = read_model_info(default_model_path)
    elapsed = time.perf_counter() - started

    assert info.architecture == "gemma3"
    assert info.layer_count == 18
    # this build of gemma-3-270m carries no tokenizer.chat_template key
    assert info.has_chat_template is False
    assert info.tensor_count == len(read_tensor_infos(default_model_path)) > 0
    assert info.tensor_data_offset + info.tensor_data_bytes <= info.size_bytes
    assert elapsed < 2.0  # GGUFReader needs ~17 s for the same file


# --- files that cannot be used --------------------------------------------------------------


def test_missing_file(tmp_path):
    assert_model_error(tmp_path / "nope.gguf", f"model file not found: {tmp_path / 'nope.gguf'}")


def test_directory(tmp_path):
    assert_model_error(tmp_path, f"model path is a directory, not a file: {tmp_path}")


def test_empty_file(tmp_path):
    assert_model_error(write_bytes(tmp_path, b""), "model file is empty: ")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path, tiny_blob):
    path = write_bytes(tmp_path, tiny_blob)
    path.chmod(0)
    assert_model_error(path, "permission denied")


@pytest.mark.parametrize(
    "error, expected",
    [
        (PermissionError(errno.EACCES, "Permission denied"), "cannot read model file {path}: permission denied"),
        (OSError(errno.EIO, "Input/output error"), "cannot read model file {path}: Input/output error"),
    ],
)
def test_os_errors_while_opening(tmp_path, tiny_blob, monkeypatch, error, expected):
    path = write_bytes(tmp_path, tiny_blob)

    def failing_mmap(*_args, **_kwargs):
        raise error

    monkeypatch.setattr(mmap, "mmap", failing_mmap)
    assert_model_error(path, expected.format(path=path))


@pytest.mark.parametrize(
    "start, expected",
    [
        (b"PK\x03\x04" + bytes(40), "not a GGUF file: {path} (starts with b'PK\\x03\\x04')"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a GGUF file: {path} (starts with b'\\x89PNG')"),
        (b"GG", "not a GGUF file: {path} (starts with b'GG')"),
        (b"ggml" + bytes(40), "not a GGUF file"),
    ],
)
def test_wrong_magic(tmp_path, start, expected):
    path = write_bytes(tmp_path, start)
    assert_model_error(path, expected.format(path=path))


@pytest.mark.parametrize(
    "version_bytes, expected",
    [
        (struct.pack("<I", 1), "unsupported GGUF version 1 in {path} (supported: 2 and 3)"),
        (struct.pack("<I", 4), "unsupported GGUF version 4 in {path}"),
        (struct.pack(">I", 3), "unsupported big-endian GGUF file: {path}"),
    ],
)
def test_unsupported_version(tmp_path, tiny_blob, version_bytes, expected):
    path = write_bytes(tmp_path, tiny_blob[:4] + version_bytes + tiny_blob[8:])
    assert_model_error(path, expected.format(path=path))


def test_version_2_is_supported(tmp_path, tiny_blob):
    info = read_model_info(write_bytes(tmp_path, tiny_blob[:4] + struct.pack("<I", 2) + tiny_blob[8:]))
    assert info.gguf_version == 2


def after(blob: bytes, marker: bytes) -> int:
    """Position right after the first occurrence of a key or tensor name in the header."""
    return blob.index(marker) + len(marker)


HEADER_CUT = "inside the GGUF header, while reading"
TENSORS_NEED = "its tensors need"

# where to cut the tiny GGUF (from its bytes and its intact info) and what the error says
TRUNCATIONS = {
    "in the version": (lambda blob, info: 6, f"{HEADER_CUT} the GGUF version"),
    "in the tensor count": (lambda blob, info: 12, f"{HEADER_CUT} tensor count"),
    "in the key/value count": (lambda blob, info: 20, f"{HEADER_CUT} key/value count"),
    "before the first key": (
        lambda blob, info: 40,
        "key/value count 9 cannot fit in the 16 bytes left in the file",
    ),
    "in a key name": (lambda blob, info: after(blob, b"llama.embedding_le"), "a key name (length 22 at byte"),
    "in a value type": (
        lambda blob, info: after(blob, b"llama.expert_count") + 2,
        f"{HEADER_CUT} the value type of 'llama.expert_count'",
    ),
    "in a string value": (
        lambda blob, info: after(blob, b"{% for"),
        f"the value of 'tokenizer.chat_template' (length {len(CHAT_TEMPLATE)} at byte",
    ),
    "in a string array": (
        lambda blob, info: after(blob, b"tokenizer.ggml.tokens") + 16 + (8 + 3) + (8 + 1) + 8,
        "a string in array 'tokenizer.ggml.tokens' (length 1 at byte",
    ),
    "in a float array": (
        lambda blob, info: after(blob, b"tokenizer.ggml.scores") + 20,
        "item count of array 'tokenizer.ggml.scores' 3 cannot fit in the 4 bytes left in the file",
    ),
    "in a tensor name": (lambda blob, info: after(blob, b"blk.0.ffn"), "a tensor name (length 19 at byte"),
    "in a tensor shape": (
        lambda blob, info: after(blob, b"blk.0.ffn_up.weight") + 10,
        f"{HEADER_CUT} the shape of tensor 'blk.0.ffn_up.weight'",
    ),
    "in a tensor offset": (
        lambda blob, info: after(blob, b"output.weight") + 30,
        f"{HEADER_CUT} the offset of tensor 'output.weight'",
    ),
    "before the tensor data": (lambda blob, info: info.tensor_data_offset, TENSORS_NEED),
    "in the tensor data": (
        lambda blob, info: info.tensor_data_offset + 300,
        f"has {{cut}} bytes, {TENSORS_NEED} {{needed}}",
    ),
    "one byte short": (
        lambda blob, info: info.tensor_data_offset + info.tensor_data_bytes - 1,
        f"has {{cut}} bytes, {TENSORS_NEED}",
    ),
}


@pytest.mark.parametrize("where", TRUNCATIONS)
def test_truncated_file(tmp_path, tiny_blob, tiny_info, where):
    cut_at, expected = TRUNCATIONS[where]
    cut = cut_at(tiny_blob, tiny_info)
    needed = tiny_info.tensor_data_offset + tiny_info.tensor_data_bytes
    path = write_bytes(tmp_path, tiny_blob[:cut])
    message = assert_model_error(path, expected.format(cut=cut, needed=needed))
    assert "truncated" in message


def patch_u32(blob: bytes, position: int, value: int) -> bytes:
    return blob[:position] + struct.pack("<I", value) + blob[position + 4 :]


def patch_u64(blob: bytes, position: int, value: int) -> bytes:
    return blob[:position] + struct.pack("<Q", value) + blob[position + 8 :]


def rename(blob: bytes, old: bytes, new: bytes) -> bytes:
    assert len(old) == len(new)
    return blob.replace(old, new, 1)


def tensor_field(blob: bytes, name: bytes, field: str) -> int:
    """Position of a field of a 2-dimensional tensor's entry in the tensor table."""
    start = after(blob, name)
    return start + {"n_dims": 0, "dim0": 4, "type": 20, "offset": 24}[field]


# how to corrupt the tiny GGUF and what the error says
CORRUPTIONS = {
    "absurd tensor count": (
        lambda b: patch_u64(b, 8, 2**63),
        "tensor count 9223372036854775808 cannot fit in the",
    ),
    "absurd key/value count": (
        lambda b: patch_u64(b, 16, 2**64 - 1),
        "key/value count 18446744073709551615 cannot fit",
    ),
    "more keys than written": (lambda b: patch_u64(b, 16, 40), "a key name (length 844424930131968 at byte"),
    "absurd key length": (
        lambda b: patch_u64(b, 24, 99999999),
        "a key name (length 99999999 at byte 32) runs past the end of the file",
    ),
    "absurd string array count": (
        lambda b: patch_u64(b, after(b, b"tokenizer.ggml.tokens") + 8, 2**40),
        "item count of array 'tokenizer.ggml.tokens' 1099511627776 cannot fit",
    ),
    "absurd float array count": (
        lambda b: patch_u64(b, after(b, b"tokenizer.ggml.scores") + 8, 2**62),
        "item count of array 'tokenizer.ggml.scores' 4611686018427387904 cannot fit",
    ),
    "non-UTF-8 key": (lambda b: rename(b, b"general.name", b"general.\xff\xfeme"), "a key name at byte"),
    "non-UTF-8 architecture": (
        lambda b: rename(b, b"llama", b"ll\xc3ma"),
        "the value of 'general.architecture' at byte",
    ),
    "unknown value type": (
        lambda b: patch_u32(b, after(b, b"general.name"), 99),
        "unknown value type 99 for key 'general.name'",
    ),
    "unknown array item type": (
        lambda b: patch_u32(b, after(b, b"tokenizer.ggml.scores") + 4, 13),
        "unknown value type 13 for key 'tokenizer.ggml.scores'",
    ),
    "array of arrays": (
        lambda b: patch_u32(b, after(b, b"tokenizer.ggml.scores") + 4, 9),
        "key 'tokenizer.ggml.scores' is an array of arrays",
    ),
    "duplicate key": (
        lambda b: rename(b, b"tokenizer.ggml.scores", b"tokenizer.ggml.tokens"),
        "duplicate key 'tokenizer.ggml.tokens'",
    ),
    "block count is a float": (
        lambda b: patch_u32(b, after(b, b"llama.block_count"), int(gguf.GGUFValueType.FLOAT32)),
        "key 'llama.block_count' should hold a non-negative integer",
    ),
    "architecture is a number": (
        lambda b: patch_u32(b, after(b, b"general.architecture"), int(gguf.GGUFValueType.UINT64)),
        "corrupt or truncated GGUF header in",
    ),
    "too many dimensions": (
        lambda b: patch_u32(b, tensor_field(b, b"output.weight", "n_dims"), 5),
        "tensor 'output.weight' has 5 dimensions, more than 4",
    ),
    "unknown ggml type": (
        lambda b: patch_u32(b, tensor_field(b, b"output.weight", "type"), 4),
        "tensor 'output.weight' has unknown ggml type 4",
    ),
    "huge ggml type": (
        lambda b: patch_u32(b, tensor_field(b, b"output.weight", "type"), 2**32 - 1),
        "tensor 'output.weight' has unknown ggml type 4294967295",
    ),
    "row not whole blocks": (
        lambda b: patch_u64(b, tensor_field(b, b"output.weight", "dim0"), 33),
        "tensor 'output.weight' row length 33 is not a multiple of the Q8_0 block size 32",
    ),
    "unaligned tensor offset": (
        lambda b: patch_u64(b, tensor_field(b, b"output.weight", "offset"), 1000),
        "tensor 'output.weight' offset 1000 is not a multiple of the alignment 32",
    ),
    "tensor beyond the end": (
        lambda b: patch_u64(b, tensor_field(b, b"output.weight", "offset"), 2**40),
        "model file is truncated: ",
    ),
    "newline in a tensor name": (
        lambda b: rename(
            patch_u32(b, tensor_field(b, b"output.weight", "type"), 4), b"output.weight", b"output\nweight"
        ),
        "tensor 'output\\nweight' has unknown ggml type 4",
    ),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupt_header(tmp_path, tiny_blob, corruption):
    corrupt, expected = CORRUPTIONS[corruption]
    path = write_bytes(tmp_path, corrupt(tiny_blob))
    assert_model_error(path, expected)


@pytest.mark.parametrize(
    "alignment, expected", [(3, "general.alignment is 3, not a power of two"), (0, "is 0, not a power")]
)
def test_bad_alignment(tmp_path, alignment, expected):
    path = write_tiny_gguf(tmp_path / "tiny.gguf", alignment=64)
    blob = patch_u32(path.read_bytes(), after(path.read_bytes(), b"general.alignment") + 4, alignment)
    assert_model_error(write_bytes(tmp_path, blob), expected)


def test_error_message_keeps_an_odd_path_on_one_line(tmp_path):
    assert_model_error(tmp_path / "new\nline.gguf", "model file not found: ")


# --- anything else must fail cleanly --------------------------------------------------------


def read_or_model_error(path: Path) -> None:
    try:
        read_model_info(path)
    except ModelFileError as error:
        assert str(error).isprintable()


@pytest.fixture(scope="module")
def fuzz_path(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "model.gguf"


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=300) | st.binary(max_size=300).map(lambda tail: b"GGUF\x03\x00\x00\x00" + tail))
def test_arbitrary_bytes_never_escape(fuzz_path, blob):
    fuzz_path.write_bytes(blob)
    read_or_model_error(fuzz_path)


INTERESTING_U64 = [0, 1, 2, 3, 4, 5, 13, 31, 32, 255, 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1]
byte_mutation = st.tuples(st.integers(min_value=0), st.integers(0, 255).map(lambda v: bytes([v])))
word_mutation = st.tuples(
    st.integers(min_value=0), st.sampled_from(INTERESTING_U64).map(lambda v: struct.pack("<Q", v))
)


@settings(max_examples=200, deadline=None)
@given(
    mutations=st.lists(byte_mutation | word_mutation, max_size=6),
    cut=st.none() | st.integers(min_value=0),
)
def test_mutated_tiny_gguf_never_escapes(fuzz_path, tiny_blob, tiny_info, mutations, cut):
    blob = bytearray(tiny_blob)
    for position, replacement in mutations:
        start = position % tiny_info.tensor_data_offset  # the header is where parsing happens
        blob[start : start + len(replacement)] = replacement
    fuzz_path.write_bytes(bytes(blob if cut is None else blob[: cut % len(blob)]))
    read_or_model_error(fuzz_path)
