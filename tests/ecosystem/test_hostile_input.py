"""Hostile or careless input ends in a clear refusal, never a crash: headers, ids, field sizes, file modes."""

import json
import stat
import struct
from pathlib import Path

import pytest
import torch

from ecosystem import demo, promotion, store
from ecosystem.errors import InvalidInput, NotFound
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from ecosystem.smoke import SmokeTestFailed
from ecosystem.specialists import register
from m2n2.checkpoint import MAX_METADATA_BYTES, read_header, write_safetensors
from m2n2.errors import InvalidCheckpoint


def safetensors_with_header(path: Path, header: bytes) -> Path:
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def test_a_deeply_nested_header_is_refused(tmp_path: Path) -> None:
    header = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(InvalidCheckpoint, match="nests too deeply"):
        read_header(safetensors_with_header(tmp_path / "deep.safetensors", header))


def test_metadata_is_bounded_and_made_of_strings(tmp_path: Path) -> None:
    big = json.dumps({"__metadata__": {"card": "x" * (MAX_METADATA_BYTES + 1)}}).encode()
    with pytest.raises(InvalidCheckpoint, match="over the 65536-byte limit"):
        read_header(safetensors_with_header(tmp_path / "big.safetensors", big))
    nested = json.dumps({"__metadata__": {"card": {"nested": "object"}}}).encode()
    with pytest.raises(InvalidCheckpoint, match="not a JSON object of strings"):
        read_header(safetensors_with_header(tmp_path / "nested.safetensors", nested))


@pytest.fixture
def runtime(tmp_path: Path, settings_env):
    opened = open_runtime(Settings(data_dir=tmp_path / "data"))
    yield opened
    opened.close()


@pytest.mark.parametrize("ref", ["9223372036854775808", "0", 2**70, -1])
def test_ids_outside_the_database_range_name_no_model(runtime, ref) -> None:
    with runtime.sessions() as session, pytest.raises(NotFound, match="no model with id"):
        store.model_by_name_or_id(session, ref)


def test_source_and_licence_are_bounded(runtime) -> None:
    with runtime.sessions() as session:
        with pytest.raises(InvalidInput, match="source is 2001 characters"):
            store.add_model(session, name="m", sha256="a" * 64, n_bytes=1, source="s" * 2001)
        with pytest.raises(InvalidInput, match="licence is 201 characters"):
            store.add_model(session, name="m", sha256="a" * 64, n_bytes=1, licence="l" * 201)


def test_the_data_directory_and_database_are_private(runtime) -> None:
    assert stat.S_IMODE(runtime.settings.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(runtime.settings.sqlite_file.stat().st_mode) == 0o600


@pytest.mark.parametrize("name", ["../../etc/passwd", "a b", "..", ".", "42", "x" * 97, "naïve", ""])
def test_model_names_use_a_safe_charset(runtime, name: str) -> None:
    with runtime.sessions() as session, pytest.raises(InvalidInput, match="model name"):
        store.add_model(session, name=name, sha256="a" * 64, n_bytes=1)


def test_a_model_that_cannot_serve_is_never_made_champion(tmp_path: Path, settings_env) -> None:
    runtime = open_runtime(Settings(data_dir=tmp_path / "data"))
    demo.init_digits(runtime)
    with runtime.sessions() as session:
        space = runtime.family(session)[2]
        before = store.champion(session).version
    huge = {spec.name: torch.full(spec.shape, 3e38) for spec in space}  # finite weights, infinite logits
    path = write_safetensors(tmp_path / "huge.safetensors", space, huge.items())
    register(runtime, path, name="huge", registered_by="test")
    with pytest.raises(SmokeTestFailed, match="'huge' gives a non-finite answer"):
        promotion.promote(runtime, "huge", "test")
    with runtime.sessions() as session:
        assert store.champion(session).version == before  # nothing recorded
        assert store.champion_history(session, 1)[0].version == before
    runtime.close()
