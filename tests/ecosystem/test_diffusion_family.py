"""The diffusion family: an ecosystem of UNets on the command line, both chromosome modes, the scorers.

Pipelines are tiny and random (a 67K-parameter UNet drawing 16x16 grey images in a few steps), so the
whole module runs in well under a minute; what it checks holds for any UNet pipeline.
"""

import json
from pathlib import Path

import pytest
import torch
from diffusers import DiffusionPipeline
from diffusion_models import clip_model, digits_classifier, tiny_pipeline, tiny_unet

from benchmarks import diffusion_train
from ecosystem import store
from ecosystem.cli import main
from ecosystem.errors import RegistrationRefused
from ecosystem.families import get_family, image_scorers
from ecosystem.families.diffusion import ATTENTION
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings
from m2n2.checkpoint import open_source
from m2n2.crossover import chromosome_genes, slerp_weights, split_slerp_tensors
from m2n2.genomes import LazyGenomes
from m2n2.space import ChromosomeSpace, ParamSpace

PROMPTS = [("a handwritten seven", "7"), ("手書き の 三", "3"), ("the digit one", "1"), ("数字 の 五", "5")]


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A base pipeline, two UNets of its architecture, a wider UNet, a digits classifier."""
    root = tmp_path_factory.mktemp("diffusion")
    tiny_pipeline(root / "base")
    tiny_pipeline(root / "pipeline-b", seed=7)  # a whole pipeline: its UNet is the member
    tiny_unet(root / "a", seed=11)
    tiny_unet(root / "wider", channels=(8, 32))
    digits_classifier(root / "digits")
    return root


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_init_register_evolve_export(parts: Path, tmp_path: Path, settings_env, capsys) -> None:
    d = ("--data-dir", str(tmp_path / "eco"))
    options = ("--set", "steps=2", "--set", f"digits_dir={parts / 'digits'}")
    code, out, err = run(capsys, "init", "--family", "diffusion", "--base", str(parts / "base"), *options, *d)
    assert code == 0 and "created a diffusion ecosystem" in out, err
    for name, path in (("english", parts / "a"), ("japanese", parts / "pipeline-b")):
        code, out, err = run(capsys, "register", str(path), "--name", name, "--licence", "apache-2.0", *d)
        assert code == 0 and f"registered {name}" in out, err
    code, _, err = run(capsys, "register", str(parts / "wider"), "--name", "wider", *d)
    assert code != 0 and "block_out_channels is [8, 32], the base's is [8, 16]" in err

    assert run(capsys, "task", "create", "digits", "--scoring", "digits", *d)[0] == 0
    points = tmp_path / "points.jsonl"
    points.write_text("".join(json.dumps({"inputs": p, "target": t, "pool": "fitness"}) + "\n" for p, t in PROMPTS))
    assert run(capsys, "feedback", "import", "digits", str(points), *d)[0] == 0
    code, _, err = run(capsys, "evolve", "--steps", "3", *d)
    assert code == 0, err

    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    with runtime.sessions() as session:
        children = store.list_models(session, kind="child")
        _, config, space = runtime.family(session)
        specialists = {m.name: m for m in store.list_models(session, kind="specialist")}
    assert children, "three steps admit children into a half-empty archive"
    assert isinstance(space, ChromosomeSpace) and config["chromosomes"] == "attention"

    child = children[-1]
    code, _, err = run(capsys, "export", child.name, str(tmp_path / "export"), *d)
    assert code == 0, err
    exported = tmp_path / "export"
    card = (exported / "README.md").read_text()
    assert "english" in card and "japanese" in card, "the model card lists the ancestry"
    pipeline = DiffusionPipeline.from_pretrained(exported, local_files_only=True)
    with runtime.source(child) as source:
        for name, tensor in pipeline.unet.state_dict().items():
            assert torch.equal(tensor, source.get(name)), name
    base = DiffusionPipeline.from_pretrained(parts / "base", local_files_only=True)
    for name, tensor in base.text_encoder.state_dict().items():
        assert torch.equal(tensor, pipeline.text_encoder.state_dict()[name]), "the text encoder is the base's"
    images = pipeline(["a handwritten seven"], num_inference_steps=2, height=16, width=16, output_type="pt").images
    assert images.shape == (1, 1, 16, 16)

    # The lineage row is the whole recipe: replaying it (both chromosomes from one pair) gives the same file.
    sha256 = child.sha256
    assert runtime.artifacts.remove(sha256, durable=False)
    code, _, err = run(capsys, "rebuild", child.name, *d)
    assert code == 0, err
    assert runtime.artifacts.verify(sha256)
    assert specialists["japanese"].sha256 != specialists["english"].sha256
    runtime.close()


def test_init_refuses_custom_code_and_pickles(parts: Path, tmp_path: Path) -> None:
    family = get_family("diffusion")
    custom = tmp_path / "custom"
    tiny_pipeline(custom)
    (custom / "unet" / "modeling.py").write_text("raise SystemExit\n")
    with pytest.raises(RegistrationRefused, match="custom code"):
        family.create_config({"base": str(custom)}, tmp_path / "eco1")
    pickled = tmp_path / "pickled"
    tiny_pipeline(pickled)
    torch.save({}, pickled / "vae" / "diffusion_pytorch_model.bin")
    with pytest.raises(RegistrationRefused, match=r"diffusion_pytorch_model\.bin"):
        family.create_config({"base": str(pickled)}, tmp_path / "eco2")
    with pytest.raises(ValueError, match="chromosomes"):
        family.create_config({"base": str(parts / "base"), "chromosomes": "layers"}, tmp_path / "eco3")


@pytest.mark.parametrize("mode", ["attention", "single"])
def test_chromosome_modes_cross_over_as_declared(parts: Path, tmp_path: Path, mode: str) -> None:
    family = get_family("diffusion")
    config = family.create_config({"base": str(parts / "base"), "chromosomes": mode}, tmp_path)
    space = family.space(config)
    a = open_source(family.weight_files(config, parts / "a"))
    b = open_source(family.weight_files(config, parts / "pipeline-b"))
    genomes = LazyGenomes(space)
    ratio, split = 0.3125 + 0.7 / 4096, 5000  # a ratio whose second 12-bit field is 0.7
    child = genomes.child(a, b, ratio, split if mode == "single" else split * space.sizes[1] + 777, 0.0, None)
    if mode == "single":
        assert type(space) is ParamSpace and genomes.dim == space.dim
        expected = dict(split_slerp_tensors(a, b, space, ratio, split))
        for name in space.names:
            assert torch.equal(child.get(name), expected[name]), name
        return
    attention = [n for n in space.names if ATTENTION.search(n)]
    assert attention and any(".attn2." in n for n in attention), "cross-attention is in the attention chromosome"
    assert isinstance(space, ChromosomeSpace) and genomes.dim == space.sizes[0] * space.sizes[1]
    assert sum(space.sizes) == space.dim
    (split_attn, ratio_attn), (split_rest, ratio_rest) = chromosome_genes(
        split * space.sizes[1] + 777, ratio, space.sizes
    )
    assert (split_attn, split_rest) == (split, 777)
    assert ratio_attn == 0.3125 and ratio_rest == pytest.approx(0.7, abs=1e-9)
    for k, (cut, t) in enumerate(((split_attn, ratio_attn), (split_rest, ratio_rest))):
        names = [n for n in space.names if space.place[n][0] == k]
        va = torch.cat([a.get(n).reshape(-1) for n in names])
        vb = torch.cat([b.get(n).reshape(-1) for n in names])
        cos = float(torch.dot(va, vb) / (va.norm() * vb.norm()))
        (wa1, wb1), (wa2, wb2) = slerp_weights(cos, t), slerp_weights(cos, 1 - t)
        expected = torch.cat([wa1 * va[:cut] + wb1 * vb[:cut], wa2 * va[cut:] + wb2 * vb[cut:]])
        got = torch.cat([child.get(n).reshape(-1) for n in names])
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_digits_scorer_reads_digits_and_stays_in_unit_interval(tmp_path: Path) -> None:
    classifier, accuracy = diffusion_train.train_classifier(steps=300, seed=0)
    assert accuracy > 0.85
    scorer = image_scorers.load_scorer("digits", str(image_scorers.save_digits_classifier(classifier, tmp_path)))
    images, labels = diffusion_train.digit_images(16)
    images = (images[:200] + 1) / 2  # the pipeline's output range
    right = scorer(images, [str(int(y)) for y in labels[:200]])
    wrong = scorer(images, [str((int(y) + 1) % 10) for y in labels[:200]])
    assert right.shape == (200,) and bool(((right >= 0) & (right <= 1)).all())
    assert right.mean() > 0.7 > wrong.mean()
    with pytest.raises(ValueError, match="target"):
        scorer(images[:1], ["seven"])


def test_clip_scorer_contract(tmp_path: Path) -> None:
    scorer = image_scorers.load_scorer("clip", str(clip_model(tmp_path / "clip")))
    images = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    scores = scorer(images, ["a handwritten seven", "the digit one", "7"])
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 1)).all())
    assert torch.equal(scores, scorer(images, ["a handwritten seven", "the digit one", "7"]))
    with pytest.raises(ValueError, match="target"):
        scorer(images[:1], [""])
    with pytest.raises(ValueError, match="images"):
        scorer(images, ["one"])
    with pytest.raises(ValueError, match="unknown image scorer"):
        image_scorers.load_scorer("fid", str(tmp_path))


def test_normalise_by_worst_is_per_sample() -> None:
    population = torch.tensor([[0.20, 0.30, 0.50], [0.25, 0.10, 0.50], [0.30, 0.20, 0.60]])  # (models, samples)
    normalised = image_scorers.normalise_by_worst(population)
    assert torch.equal(normalised.min(dim=0).values, torch.zeros(3)), "the worst model on each sample gets 0"
    assert bool(((normalised >= 0) & (normalised <= 1)).all())
    assert torch.equal(normalised.argsort(dim=0), population.argsort(dim=0)), "the order per sample is kept"
    torch.testing.assert_close(normalised[2, 0], torch.tensor((0.30 - 0.20) / (1 - 0.20)))


def test_unknown_rule_and_missing_scorer_are_named(parts: Path, tmp_path: Path) -> None:
    family = get_family("diffusion")
    config = family.create_config({"base": str(parts / "base"), "steps": 1}, tmp_path)
    module = family.build(config, open_source(family.weight_files(config, parts / "a")))
    with pytest.raises(ValueError, match="clip_dir"):
        family.score(module, config, ["a seven"], ["7"], "clip")
    with pytest.raises(ValueError, match="unknown scoring rule"):
        family.score(module, config, ["a seven"], ["7"], "accuracy")
    with pytest.raises(ValueError, match=r"config\.steps"):
        family.validate_config({**config, "steps": 0})


def test_image_demo_has_a_task_per_language(tmp_path: Path, settings_env, monkeypatch, capsys) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    d = ("--data-dir", str(tmp_path / "eco"))
    code, out, err = run(capsys, "init", "--demo", "images", "--size", "tiny", *d)
    assert code == 0, err
    assert "task english: 40 fitness points, 20 gate points (digits)" in out
    assert "task japanese: 40 fitness points, 20 gate points (digits)" in out
    assert "registered digits-english" in out and "registered digits-japanese" in out
    assert any((tmp_path / "cache" / "m2n2" / "diffusion").iterdir()), "the build is cached"
    runtime = open_runtime(Settings(data_dir=tmp_path / "eco"))
    with runtime.sessions() as session:
        _, config, _ = runtime.family(session)
    assert Path(config["digits_dir"]).is_relative_to(tmp_path / "eco"), "the scorer lives in the data directory"
    runtime.close()
