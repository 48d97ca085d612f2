"""Checkpoint checks before registration: every refusal names its cause; a good file passes with its sha256."""

import hashlib
import pickle
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ecosystem.errors import InvalidInput, RegistrationRefused
from ecosystem.registration import check_checkpoint
from m2n2.space import ParamSpace

EXPECTED = ParamSpace(
    [("fc1.weight", (4, 3), torch.float32), ("fc1.bias", (4,), torch.float32), ("fc2.weight", (2, 4), torch.float32)]
)
LIMIT = 1 << 20


def state(**overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    tensors = {s.name: torch.randn(s.shape, generator=g) for s in EXPECTED}
    tensors.update(overrides)
    return {k: v for k, v in tensors.items() if v is not None}


def saved(tmp_path: Path, tensors: dict[str, torch.Tensor], name: str = "model.safetensors") -> Path:
    path = tmp_path / name
    save_file(tensors, str(path))
    return path


def refused(path: Path, match: str, max_bytes: int = LIMIT) -> RegistrationRefused:
    with pytest.raises(RegistrationRefused, match=match) as e:
        check_checkpoint(path, EXPECTED, max_bytes)
    return e.value


def test_valid_float16_checkpoint_passes_with_its_sha256(tmp_path: Path) -> None:
    path = saved(tmp_path, {k: v.half() for k, v in state().items()}, "any-name.bin")
    checked = check_checkpoint(path, EXPECTED, LIMIT)
    assert checked.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert checked.n_bytes == path.stat().st_size
    assert checked.space == EXPECTED  # names and shapes, in the expected order
    assert [s.dtype for s in checked.space] == [torch.float16] * 3  # the file's dtypes


def test_refusals_are_invalid_input_and_value_errors(tmp_path: Path) -> None:
    error = refused(saved(tmp_path, state(**{"fc1.bias": None})), "missing")
    assert isinstance(error, InvalidInput) and isinstance(error, ValueError)


def test_file_over_the_limit(tmp_path: Path) -> None:
    path = saved(tmp_path, state())
    size = path.stat().st_size
    refused(path, f"file is {size} bytes, over the {size - 1}-byte limit", max_bytes=size - 1)


def test_torch_save_pickle_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "pytorch_model.bin"
    torch.save(state(), path, _use_new_zipfile_serialization=False)  # legacy format: a bare pickle stream
    refused(path, "this is a pickle; only safetensors is accepted")


def test_plain_pickle_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"fc1.weight": [1.0]}, protocol=4))
    refused(path, "this is a pickle; only safetensors is accepted")


def test_torch_save_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(state(), path)  # the default format is a zip archive holding a pickle
    refused(path, r"this is a zip archive \(torch.save's format\); only safetensors is accepted")


def test_zip_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("model.safetensors", b"not really")
    refused(path, "zip archive.*only safetensors is accepted")


def test_truncated_file(tmp_path: Path) -> None:
    path = saved(tmp_path, state())
    path.write_bytes(path.read_bytes()[:-10])
    refused(path, "truncated")


def test_file_too_short(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    path.write_bytes(b"{}")
    refused(path, "too short")


def test_oversized_header_length(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 1 << 40) + b'{"a": 1}')
    refused(path, f"header length {1 << 40} is larger than the file or the {LIMIT}-byte limit")


def test_wrong_tensor_name(tmp_path: Path) -> None:
    tensors = state()
    tensors["layer1.weight"] = tensors.pop("fc1.weight")
    refused(
        saved(tmp_path, tensors), "missing tensor 'fc1.weight' \\(the file has unexpected tensor 'layer1.weight'\\)"
    )


def test_wrong_shape(tmp_path: Path) -> None:
    refused(saved(tmp_path, state(**{"fc1.bias": torch.zeros(5)})), r"'fc1.bias' has shape \[5\], expected \[4\]")


def test_missing_tensor(tmp_path: Path) -> None:
    refused(saved(tmp_path, state(**{"fc2.weight": None})), "missing tensor 'fc2.weight'$")


def test_extra_tensor(tmp_path: Path) -> None:
    refused(saved(tmp_path, state(**{"fc2.bias": torch.zeros(2)})), "unexpected tensor 'fc2.bias'")


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool])
def test_integer_or_bool_into_float_is_refused(tmp_path: Path, dtype: torch.dtype) -> None:
    bad = state(**{"fc1.bias": torch.ones(4, dtype=dtype)})
    refused(saved(tmp_path, bad), f"'fc1.bias' has dtype {str(dtype)[6:]}, which cannot be cast to float32")


@pytest.mark.parametrize(("value", "word"), [(float("nan"), "NaN"), (float("inf"), "Inf"), (float("-inf"), "Inf")])
def test_non_finite_values(tmp_path: Path, value: float, word: str) -> None:
    weight = torch.zeros(2, 4, dtype=torch.bfloat16)
    weight[1, 2] = value
    refused(saved(tmp_path, state(**{"fc2.weight": weight})), f"tensor 'fc2.weight' contains {word}")


def test_not_a_file(tmp_path: Path) -> None:
    refused(tmp_path, "not a file")


def test_safetensors_whose_header_length_looks_like_a_pickle_passes(tmp_path: Path) -> None:
    # A 640-byte header starts the file with b"\x80\x02", the pickle protocol-2 opening.
    raw = saved(tmp_path, state()).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = raw[8 : 8 + header_len].rstrip().ljust(640)  # safetensors itself pads headers with spaces
    path = tmp_path / "padded.safetensors"
    path.write_bytes(struct.pack("<Q", 640) + header + raw[8 + header_len :])
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert check_checkpoint(path, EXPECTED, LIMIT).space == EXPECTED
