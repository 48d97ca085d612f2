"""Token-by-token decoding for transformers causal LMs: a KV-cached batch, per-row sampling, streamed text.

The ``causal-lm`` family uses these for generation (the OpenAI-compatible routes), ``predict`` and
exact-match scoring, so all three decode the same way.

- ``Decoder`` runs one left-padded batch step by step with the model's KV cache, and drops rows as they
  finish, so a long completion does not keep short ones' rows in every forward pass.
- ``pick_tokens`` chooses each row's next token from its own ``Sampling`` and ``torch.Generator``: a seeded
  row draws the same tokens whatever it is batched with (up to float rounding of the batch's logits).
- ``TextStream`` turns a row's tokens into text pieces: it decodes incrementally without splitting a
  multi-byte character and holds back text that may be the start of a stop string, so the stop string is
  never streamed.
"""

import functools
import inspect
import logging
from collections.abc import Sequence

import torch

from ecosystem.families.base import Sampling

logger = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"  # what decoding an incomplete UTF-8 sequence ends with


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: str | torch.device) -> tuple[torch.Tensor, ...]:
    """Token ids, attention mask and position ids of left-padded rows, so every row's next token is last."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # (b, t)
    mask = torch.zeros((len(rows), width), dtype=torch.long)  # (b, t)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    # Positions count real tokens only, so a padded row sees the positions it would see alone.
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (b, t)
    return ids.to(device), mask.to(device), positions.to(device)


def run_model(module: torch.nn.Module, **inputs: object) -> object:
    """Call a causal LM with the inputs its forward takes (ALiBi models take no ``position_ids``, say)."""
    names = _forward_params(type(module))
    if "cache" in inputs and "cache" not in names:  # transformers before 5.24 calls it past_key_values
        inputs["past_key_values"] = inputs.pop("cache")
    with torch.inference_mode():
        return module(**{name: value for name, value in inputs.items() if name in names})


@functools.lru_cache(maxsize=64)
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


class Decoder:
    """One batch decoded step by step with the model's KV cache; ``rows`` maps live rows to input rows."""

    def __init__(self, module: torch.nn.Module, prompts: Sequence[Sequence[int]], pad_id: int) -> None:
        self.module = module
        self.device = next(module.parameters()).device
        self.ids, self.mask, self.positions = left_pad(prompts, pad_id, self.device)  # (b, t) each
        self.rows = torch.arange(len(prompts))  # (b,) input row of each live row
        self.cache = None

    def logits(self) -> torch.Tensor:
        """Next-token logits of the live rows, (b, vocab) in float32; feeds the pending tokens first."""
        out = run_model(
            self.module,
            input_ids=self.ids,
            attention_mask=self.mask,
            position_ids=self.positions,
            use_cache=True,
            logits_to_keep=1,
            cache=self.cache,
        )
        self.cache = out["cache"] if "cache" in out else out.get("past_key_values")
        return out.logits[:, -1].float()  # (b, vocab)

    def advance(self, tokens: torch.Tensor) -> None:
        """Append one token per live row; the next ``logits`` call feeds them."""
        new_ids, new_positions = tokens.to(self.device).view(-1, 1), self.positions[:, -1:] + 1  # (b, 1) each
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(tokens), 1)], dim=1)  # (b, t + 1)
        if self.cache is None:  # a model that keeps no cache reads the whole sequence again
            self.ids = torch.cat([self.ids, new_ids], dim=1)  # (b, t + 1)
            self.positions = torch.cat([self.positions, new_positions], dim=1)  # (b, t + 1)
        else:
            self.ids, self.positions = new_ids, new_positions

    def keep(self, live: torch.Tensor) -> None:
        """Keep only the live rows where ``live`` (b,) is true, dropping finished ones from the cache."""
        if bool(live.all()):
            return
        index = live.nonzero().view(-1)  # (b_kept,)
        if self.cache is not None:
            select = getattr(self.cache, "batch_select_indices", None)
            if select is None:  # a cache that cannot shrink: finished rows keep being fed, their tokens ignored
                return
            select(index.to(self.device))
        self.rows = self.rows[index.cpu()]
        on_device = index.to(self.device)
        self.ids, self.mask, self.positions = self.ids[on_device], self.mask[on_device], self.positions[on_device]


# Temperatures below this decode greedily: dividing logits by less overflows float32 (vLLM uses the same bound).
GREEDY_BELOW = 1e-5


def is_greedy(sampling: Sampling) -> bool:
    return sampling.temperature < GREEDY_BELOW


def generator_for(sampling: Sampling, seed: int) -> torch.Generator | None:
    """A CPU generator seeded for one row (None for greedy rows, which draw nothing)."""
    return None if is_greedy(sampling) else torch.Generator().manual_seed(seed)


def pick_tokens(
    logits: torch.Tensor, samplings: Sequence[Sampling], generators: Sequence[torch.Generator | None]
) -> torch.Tensor:
    """The next token of each row (b,), on the CPU: argmax for greedy rows, else a top-p draw from its generator.

    Each sampled row draws one uniform number from its own generator and picks its token by inverse CDF on
    the logits' device, all rows at once; so a row's tokens depend on its seed and logits alone.
    """
    tokens = logits.argmax(dim=1)  # (b,)
    sampled = [i for i, s in enumerate(samplings) if not is_greedy(s)]
    if sampled:
        device = logits.device
        index = torch.tensor(sampled, device=device)  # (s,)
        temperature = torch.tensor([samplings[i].temperature for i in sampled], device=device)  # (s,)
        top_p = torch.tensor([samplings[i].top_p for i in sampled], device=device)  # (s,)
        u = torch.cat([torch.rand(1, generator=generators[i], dtype=torch.float64) for i in sampled])  # (s,)
        tokens[index] = _draw(logits[index] / temperature[:, None], top_p, u.to(device))
    return tokens.cpu()


def _draw(logits: torch.Tensor, top_p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Tokens (s,) drawn by inverse CDF with uniforms ``u`` (s,) from each row's top-p nucleus of softmax(logits)."""
    probs, order = logits.softmax(dim=1).sort(dim=1, descending=True, stable=True)  # (s, vocab) each
    # Keep the smallest prefix whose mass reaches top_p (the most likely token always stays).
    probs = probs.masked_fill(probs.cumsum(dim=1) - probs >= top_p[:, None], 0.0)  # (s, vocab)
    cdf = probs.cumsum(dim=1)  # (s, vocab)
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]  # (s, 1): below the nucleus' mass
    pick = torch.searchsorted(cdf, target).clamp(max=cdf.shape[1] - 1)  # (s, 1)
    return order.gather(1, pick).squeeze(1)  # (s,)


class TextStream:
    """A row's generated tokens as text, released in pieces that never split a character or show a stop string.

    Decoding is incremental, as vLLM's detokenizer does it: each step decodes only a short window of recent
    tokens, and the window starts inside the prompt (``context``), so a completion's first word keeps the
    space a SentencePiece tokenizer drops when a sequence starts with it.
    """

    CONTEXT_TOKENS = 5  # prompt tokens decoded before the completion's first one

    def __init__(self, tokenizer, stop: Sequence[str] = (), context: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.stop = tuple(s for s in stop if s)
        self.tokens = list(context)[-self.CONTEXT_TOKENS :]
        self.prefix_offset, self.read_offset = 0, len(self.tokens)  # window start; end of text already decoded
        self.text = ""  # the completion decoded so far
        self.sent = 0  # characters of ``text`` already released

    def push(self, token: int) -> tuple[str, bool]:
        """Add a token; the newly releasable text and whether a stop string has appeared (text cut before it)."""
        self.tokens.append(token)
        self.text += self._decode_new(final=False)
        hit = self._first_stop()
        if hit is not None:
            self.text = self.text[:hit]
            return self._release(len(self.text)), True
        return self._release(len(self.text) - self._stop_prefix_len(self.text)), False

    def flush(self) -> str:
        """Release everything held back (the completion ended without a stop string)."""
        self.text += self._decode_new(final=True)
        return self._release(len(self.text))

    def _decode_new(self, final: bool) -> str:
        """Text the tokens after ``read_offset`` add; empty while they end inside a character (unless final)."""
        decode = functools.partial(self.tokenizer.decode, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        prefix = decode(self.tokens[self.prefix_offset : self.read_offset])
        full = decode(self.tokens[self.prefix_offset :])
        if len(full) <= len(prefix) or (full.endswith(REPLACEMENT_CHAR) and not final):
            return ""  # nothing visible yet, or an incomplete character waiting for its next bytes
        self.prefix_offset, self.read_offset = self.read_offset, len(self.tokens)
        return full[len(prefix) :]

    def _release(self, end: int) -> str:
        piece, self.sent = self.text[self.sent : end], max(end, self.sent)
        return piece

    def _first_stop(self) -> int | None:
        """Where the earliest stop string starts in the text, if any (only new text can hold a new one)."""
        start = max(0, self.sent - max((len(s) for s in self.stop), default=0))
        hits = [i for s in self.stop if (i := self.text.find(s, start)) >= 0]
        return min(hits) if hits else None

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of ``text`` that starts a stop string (it may complete next step)."""
        longest = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(text)), longest, -1):
                if text.endswith(s[:n]):
                    longest = n
                    break
        return longest
