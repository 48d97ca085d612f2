"""The text benchmark's CMA-ES genome: per-layer task-arithmetic weights over a Llama's tensors."""

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from benchmarks import text
from m2n2 import StateDictSource, merge
from m2n2.checkpoint import load_state_dict
from m2n2.space import ParamSpace


def llama_space() -> ParamSpace:
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return ParamSpace([(n, tuple(t.shape), torch.float32) for n, t in model.state_dict().items()])


def test_groups_are_embeddings_each_layer_then_head() -> None:
    space = llama_space()
    groups = text.layer_groups(space)
    assert len(groups) == 3 + 2
    assert groups[0] == ["model.embed_tokens.weight"]
    assert all(name.startswith("model.layers.1.") for name in groups[2])
    assert set(groups[-1]) == {"model.norm.weight", "lm_head.weight"}
    assert sorted(n for g in groups for n in g) == sorted(space.names), "every tensor in exactly one group"


def test_layerwise_weights_span_base_task_arithmetic_and_single_layers() -> None:
    space = llama_space()
    g = torch.Generator().manual_seed(0)
    base, a, b = (torch.randn(space.dim, generator=g) for _ in range(3))
    groups = text.layer_groups(space)
    n = len(groups)
    assert torch.equal(text.layerwise_task_arithmetic(space, base, [a - base, b - base], np.zeros(2 * n), groups), base)
    ones = text.layerwise_task_arithmetic(space, base, [a - base, b - base], np.ones(2 * n), groups)
    sources = [StateDictSource(space.unflatten(x)) for x in (a, b)]
    reference = merge(sources, "task_arithmetic", base=StateDictSource(space.unflatten(base)))
    torch.testing.assert_close(ones, space.flatten(load_state_dict(reference)))
    # A weight on one layer of one specialist moves that layer's tensors only.
    weights = np.zeros(2 * n)
    weights[2] = 1.0  # math, decoder layer 1
    only = text.layerwise_task_arithmetic(space, base, [a - base, b - base], weights, groups)
    for spec in space:
        expected = a if spec.name in groups[2] else base
        torch.testing.assert_close(only[spec.offset : spec.end], expected[spec.offset : spec.end], msg=spec.name)
