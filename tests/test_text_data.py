"""The text skills' generators: disjoint splits, deterministic draws, answers that are right; the tokenizer."""

import random
import re

import pytest

from ecosystem import text_build, text_data
from ecosystem.families.causal_lm import extract_answer


@pytest.mark.parametrize("skill", text_data.SKILLS)
def test_splits_share_no_problem_and_no_prompt(skill: str) -> None:
    keys = text_data.math_keys() if skill == "math" else text_data.shop_keys()
    by_split = {s: {k for k in keys if text_data.split_of(skill, k) == s} for s in text_data.SPLITS}
    assert sum(len(v) for v in by_split.values()) == len(keys)
    assert all(by_split.values()), "every split has problems"
    feedback = text_data.examples(skill, "feedback", 40, seed=0)
    test = text_data.examples(skill, "test", 40, seed=0)
    train = text_data.training_examples(skill, 500, seed=0)

    def problem(e: text_data.Example) -> tuple:
        return e.key if skill == "math" else e.key[:4]  # shop keys carry the page state after the product

    for a, b in ((feedback, test), (feedback, train), (test, train)):
        assert not {problem(e) for e in a} & {problem(e) for e in b}
        assert not {e.prompt for e in a} & {e.prompt for e in b}
    assert len({problem(e) for e in test}) == len(test), "each problem at most once in a set"


def test_draws_are_deterministic_and_seeded() -> None:
    assert text_data.examples("shop", "test", 10, seed=1) == text_data.examples("shop", "test", 10, seed=1)
    assert text_data.examples("math", "test", 10, seed=1) != text_data.examples("math", "test", 10, seed=2)
    assert text_data.pretraining_text(50, 3, 0.2) == text_data.pretraining_text(50, 3, 0.2)


def test_asking_for_more_problems_than_a_split_holds_says_how_many_it_has() -> None:
    with pytest.raises(ValueError, match=r"the test split of math has \d+ problems, 100000 were asked for"):
        text_data.examples("math", "test", 100_000, seed=0)
    with pytest.raises(ValueError, match="skill"):
        text_data.examples("poetry", "test", 1, seed=0)


def test_math_answers_are_the_result_after_hashes() -> None:
    for e in text_data.examples("math", "feedback", 60, seed=0):
        op, a, b = e.key
        expected = {"+": a + b, "-": a - b, "*": a * b}[op]
        assert extract_answer(e.answer, r"####\s*(.+)") == str(expected)
        assert e.prompt.startswith("Question: ") and e.prompt.endswith("\nAnswer:")
        assert str(a) in e.prompt and str(b) in e.prompt


def test_shop_actions_follow_the_page() -> None:
    rng = random.Random(0)
    key = ("red", "cotton", "shirt", "m")
    assert text_data.shop_page(key, "search", rng)[2] == "search[red cotton shirt]"
    _, observation, action = text_data.shop_page(key, "results", rng)
    clicked = re.fullmatch(r"click\[(B\d+)\]", action).group(1)
    assert f"[{clicked}] red cotton shirt $" in observation, "the click picks the listed item matching the request"
    assert observation.count("shirt") == 3
    assert text_data.shop_page(key, "item", rng)[2] == "click[m]"
    _, observation, action = text_data.shop_page(key, "chosen", rng)
    assert re.fullmatch(r"buy\[B\d+\]", action) and action[4:-1] in observation


def test_tokenizer_round_trips_both_skills_and_any_text() -> None:
    corpus = text_data.pretraining_text(200, 0, 0.5)
    tokenizer = text_build.train_tokenizer(320, corpus)
    texts = [e.prompt + e.answer for s in text_data.SKILLS for e in text_data.examples(s, "test", 5, seed=0)]
    for text in [*texts, "Größe: 5 µm. 日本語"]:
        assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    tokenizer.chat_template = text_build.CHAT_TEMPLATE  # the demo's: a chat message carries a completion's prompt
    assert tokenizer.apply_chat_template([{"role": "user", "content": texts[0]}], tokenize=False) == texts[0]
