"""The content-addressed artifact store."""

import hashlib
import os

import pytest
import torch

from ecosystem.artifacts import ArtifactStore
from ecosystem.errors import InvalidInput
from m2n2.checkpoint import InvalidCheckpoint, StateDictSource, iter_tensors, read_header, write_safetensors
from m2n2.space import ParamSpace


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"w": torch.randn(4, 3, generator=generator), "b": torch.randn(3, generator=generator)}


@pytest.fixture
def checkpoint(tmp_path, tensors):
    source = StateDictSource(tensors)
    return write_safetensors(tmp_path / "upload.safetensors", source.space, iter_tensors(source, source.space))


def _files(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) if path.exists() else []


def test_put_twice_stores_one_file(tmp_path, checkpoint):
    artifacts = ArtifactStore(tmp_path / "data")
    first = artifacts.put_file(checkpoint)
    second = artifacts.put_file(checkpoint)
    sha = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert (first.sha256, first.created, second.created) == (sha, True, False)
    assert first.path == second.path == artifacts.path_for(sha)
    assert first.path == tmp_path / "data" / "artifacts" / sha[:2] / f"{sha}.safetensors"
    assert first.n_bytes == second.n_bytes == checkpoint.stat().st_size
    assert _files(artifacts.artifacts_dir) == [f"{sha[:2]}/{sha}.safetensors"]
    assert _files(artifacts.tmp_dir) == []
    assert artifacts.exists(sha) and artifacts.verify(sha)


def test_put_rejects_what_is_not_safetensors_and_what_is_too_large(tmp_path, checkpoint):
    artifacts = ArtifactStore(tmp_path / "data")
    pickle_like = tmp_path / "model.pt"
    pickle_like.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    with pytest.raises(InvalidCheckpoint):
        artifacts.put_file(pickle_like)
    with pytest.raises(InvalidInput, match="100-byte limit"):
        artifacts.put_file(checkpoint, max_bytes=100)
    assert _files(artifacts.artifacts_dir) == [] and _files(artifacts.tmp_dir) == []


def test_write_tensors_gives_a_readable_checkpoint(tmp_path, tensors):
    artifacts = ArtifactStore(tmp_path)
    space = ParamSpace.from_state_dict(tensors)
    artifact = artifacts.write_tensors(space, iter(tensors.items()), metadata={"operator": "split_slerp"})
    header_space, metadata = read_header(artifact.path)
    assert header_space == space and metadata == {"operator": "split_slerp"}
    assert artifact.created and artifact.n_bytes == artifact.path.stat().st_size
    assert artifact.sha256 == hashlib.sha256(artifact.path.read_bytes()).hexdigest()
    assert artifacts.write_tensors(space, iter(tensors.items()), {"operator": "split_slerp"}).created is False
    assert _files(artifacts.tmp_dir) == []


def test_failure_mid_write_leaves_nothing(tmp_path, tensors):
    artifacts = ArtifactStore(tmp_path)
    space = ParamSpace.from_state_dict(tensors)

    def failing():
        yield "w", tensors["w"]
        raise RuntimeError("evaluation crashed")

    with pytest.raises(RuntimeError, match="crashed"):
        artifacts.write_tensors(space, failing())
    assert _files(artifacts.artifacts_dir) == [] and _files(artifacts.tmp_dir) == []


def test_verify_detects_corruption(tmp_path, checkpoint):
    artifacts = ArtifactStore(tmp_path)
    artifact = artifacts.put_file(checkpoint)
    os.chmod(artifact.path, 0o644)
    data = bytearray(artifact.path.read_bytes())
    data[-1] ^= 0xFF
    artifact.path.write_bytes(bytes(data))
    assert not artifacts.verify(artifact.sha256)
    assert artifacts.remove(artifact.sha256) and not artifacts.exists(artifact.sha256)
    assert not artifacts.verify(artifact.sha256) and not artifacts.remove(artifact.sha256)


def test_hashes_are_checked_before_touching_paths(tmp_path):
    with pytest.raises(InvalidInput, match="not a sha256"):
        ArtifactStore(tmp_path).path_for("../../etc/passwd")


def test_clean_tmp_removes_only_stale_files(tmp_path):
    artifacts = ArtifactStore(tmp_path)
    artifacts.tmp_dir.mkdir(parents=True)
    stale, fresh = artifacts.tmp_dir / "stale.part", artifacts.tmp_dir / "fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(stale, (0, 0))
    assert artifacts.clean_tmp(older_than_seconds=60) == 1
    assert _files(artifacts.tmp_dir) == ["fresh.part"]
