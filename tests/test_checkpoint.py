"""Safetensors I/O: round trips, a header parser that rejects anything else, atomic writes."""

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from m2n2.checkpoint import SafetensorsSource, StateDictSource, load_state_dict, read_header, write_safetensors
from m2n2.errors import IncompatibleModels, InvalidCheckpoint, M2N2Error, ShapeMismatch
from m2n2.space import ParamSpace


def sample_state_dict() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "f32": torch.randn(2, 3, generator=gen),
        "f16": torch.randn(5, generator=gen).half(),
        "bf16": torch.randn(3, 1, generator=gen).bfloat16(),
        "f64": torch.randn(2, generator=gen).double(),
        "i64": torch.tensor([1, -2, 3]),
        "i8": torch.tensor([[-1, 2]], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(2.5),  # 0-dim, as in e.g. a logit scale
        "empty": torch.zeros(0, 4),
    }


def raw_file(path: Path, header: object, data: bytes = b"", header_bytes: bytes | None = None) -> Path:
    """Write a file in safetensors layout by hand: u64 header length, header, data."""
    raw = header_bytes if header_bytes is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def f32_entry(begin: int, end: int, n: int = 2) -> dict[str, object]:
    return {"dtype": "F32", "shape": [n], "data_offsets": [begin, end]}


def test_round_trip_many_dtypes(tmp_path: Path) -> None:
    sd = sample_state_dict()
    space = ParamSpace.from_state_dict(sd)
    path = write_safetensors(tmp_path / "m.safetensors", space, sd.items(), metadata={"family": "mlp"})
    read_space, metadata = read_header(path)
    assert read_space == space
    assert [s.dtype for s in read_space] == [t.dtype for t in sd.values()]
    assert metadata == {"family": "mlp"}
    source = SafetensorsSource(path)
    for name, tensor in sd.items():
        assert source.get(name).dtype == tensor.dtype
        assert torch.equal(source.get(name), tensor)
    # the reference implementation reads it too
    reference = load_file(str(path))
    assert all(torch.equal(reference[k], v) for k, v in sd.items())
    assert tuple(load_state_dict(source)) == tuple(sd)


def test_reads_files_written_by_the_reference_writer(tmp_path: Path) -> None:
    sd = {"a": torch.ones(2, 2), "b": torch.arange(3, dtype=torch.int32)}
    save_file(sd, str(tmp_path / "ref.safetensors"), metadata={"k": "v"})
    space, metadata = read_header(tmp_path / "ref.safetensors")
    assert {s.name: s.shape for s in space} == {"a": (2, 2), "b": (3,)}
    assert metadata == {"k": "v"}


def assert_rejected(path: Path, match: str, **kwargs: int) -> None:
    with pytest.raises(InvalidCheckpoint, match=match) as info:
        read_header(path, **kwargs)
    assert "safetensors" in str(info.value)  # says what is accepted
    assert isinstance(info.value, M2N2Error)


@pytest.mark.parametrize("zipfile", [True, False])
def test_rejects_pickle_checkpoints(tmp_path: Path, zipfile: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=zipfile)  # written, never loaded
    assert_rejected(path, "header length")
    with pytest.raises(InvalidCheckpoint):
        SafetensorsSource(path)


@pytest.mark.parametrize("content", [b"", b"\x01\x02\x03\x04\x05"])
def test_rejects_files_shorter_than_8_bytes(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(content)
    assert_rejected(path, "too short")


def test_rejects_header_longer_than_file(tmp_path: Path) -> None:
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 1000) + b"{}")
    assert_rejected(path, "larger than the file")


def test_rejects_header_over_limit(tmp_path: Path) -> None:
    sd = {"a": torch.ones(2)}
    path = write_safetensors(tmp_path / "ok.safetensors", ParamSpace.from_state_dict(sd), sd.items())
    read_header(path)  # fine with the default limit
    assert_rejected(path, "limit", max_header_bytes=16)
    with pytest.raises(InvalidCheckpoint):
        SafetensorsSource(path, max_header_bytes=16)


@pytest.mark.parametrize("raw", [b"not json at all", b"\xff\xfe\x00garbage", b'{"a": '])
def test_rejects_non_json_header(tmp_path: Path, raw: bytes) -> None:
    assert_rejected(raw_file(tmp_path / "x.safetensors", None, header_bytes=raw), "not JSON")


@pytest.mark.parametrize("header", [[1, 2], "text", {"__metadata__": [1, 2]}, {"__metadata__": "text"}])
def test_rejects_header_or_metadata_that_is_not_an_object(tmp_path: Path, header: object) -> None:
    assert_rejected(raw_file(tmp_path / "x.safetensors", header), "not a JSON object")


@pytest.mark.parametrize(
    "entry",
    [
        "not an object",
        {"dtype": "F32", "shape": [2]},  # no offsets
        {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]},  # unsupported dtype
        {"dtype": "F32", "shape": [2], "data_offsets": [0, 4, 8]},
        {"dtype": "F32", "shape": ["x"], "data_offsets": [0, 8]},
    ],
)
def test_rejects_malformed_entries(tmp_path: Path, entry: object) -> None:
    assert_rejected(raw_file(tmp_path / "x.safetensors", {"a": entry}, b"\0" * 8), "malformed")


def test_rejects_negative_dimension(tmp_path: Path) -> None:
    header = {"a": {"dtype": "F32", "shape": [-1, -2], "data_offsets": [0, 8]}}
    assert_rejected(raw_file(tmp_path / "x.safetensors", header, b"\0" * 8), "negative")


def test_rejects_offsets_that_disagree_with_shape(tmp_path: Path) -> None:
    header = {"a": f32_entry(0, 4)}  # 2 float32 need 8 bytes
    assert_rejected(raw_file(tmp_path / "x.safetensors", header, b"\0" * 4), "do not match")


def test_rejects_overlapping_offsets(tmp_path: Path) -> None:
    header = {"a": f32_entry(0, 8), "b": f32_entry(4, 12)}
    assert_rejected(raw_file(tmp_path / "x.safetensors", header, b"\0" * 12), "overlaps")


def test_rejects_gap_between_tensors(tmp_path: Path) -> None:
    header = {"a": f32_entry(0, 8), "b": f32_entry(12, 20)}
    assert_rejected(raw_file(tmp_path / "x.safetensors", header, b"\0" * 20), "gap")


def test_rejects_truncated_or_padded_data(tmp_path: Path) -> None:
    sd = {"a": torch.ones(4), "b": torch.zeros(2, 2)}
    path = write_safetensors(tmp_path / "ok.safetensors", ParamSpace.from_state_dict(sd), sd.items())
    content = path.read_bytes()
    path.write_bytes(content[:-4])
    assert_rejected(path, "truncated")
    path.write_bytes(content + b"\0" * 4)
    assert_rejected(path, "describes")


def test_write_leaves_nothing_when_the_iterator_raises(tmp_path: Path) -> None:
    sd = {"a": torch.ones(4), "b": torch.ones(3), "c": torch.ones(2)}
    space = ParamSpace.from_state_dict(sd)

    def failing() -> Iterator[tuple[str, torch.Tensor]]:
        yield "a", sd["a"]
        raise RuntimeError("evaluation crashed mid-stream")

    target = tmp_path / "child.safetensors"
    with pytest.raises(RuntimeError, match="mid-stream"):
        write_safetensors(target, space, failing())
    assert list(tmp_path.iterdir()) == []

    # an existing file at the target is left whole, never half-overwritten
    write_safetensors(target, space, sd.items())
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_safetensors(target, space, failing())
    assert target.read_bytes() == before
    assert list(tmp_path.iterdir()) == [target]


def test_write_rejects_wrong_or_missing_tensors_without_leftovers(tmp_path: Path) -> None:
    sd = {"a": torch.ones(4), "b": torch.ones(3)}
    space = ParamSpace.from_state_dict(sd)
    target = tmp_path / "child.safetensors"
    with pytest.raises(InvalidCheckpoint, match="'b'"):
        write_safetensors(target, space, [("a", sd["a"]), ("b", torch.ones(5))])
    with pytest.raises(InvalidCheckpoint, match="'a'"):
        write_safetensors(target, space, [("b", sd["b"]), ("a", sd["a"])])
    with pytest.raises(ValueError):
        write_safetensors(target, space, [("a", sd["a"])])  # too few
    assert list(tmp_path.iterdir()) == []


def test_write_casts_to_the_space_dtype(tmp_path: Path) -> None:
    space = ParamSpace([("h", (3,), torch.float16)])
    path = write_safetensors(tmp_path / "h.safetensors", space, [("h", torch.tensor([0.5, 1.0, 2.0]))])
    assert load_file(str(path))["h"].dtype == torch.float16


def test_param_space_flatten_unflatten_round_trip() -> None:
    sd = {"w": torch.arange(6.0).view(2, 3), "s": torch.tensor(7.0), "b": torch.tensor([8.0, 9.0])}
    space = ParamSpace.from_state_dict(sd)
    assert space.dim == 9 and [(s.offset, s.end) for s in space] == [(0, 6), (6, 7), (7, 9)]
    flat = space.flatten(sd)
    assert flat.tolist() == [0.0, 1, 2, 3, 4, 5, 7, 8, 9]
    back = space.unflatten(flat)
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    with pytest.raises(ShapeMismatch):
        space.unflatten(torch.zeros(8))
    with pytest.raises(IncompatibleModels, match="'s'"):
        space.flatten({"w": sd["w"], "b": sd["b"]})
    assert StateDictSource(sd).space == space
