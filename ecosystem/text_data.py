"""Two text skills generated from a seed: GSM8K-style word problems and WebShop-style next actions.

- **math**: a one-step arithmetic word problem; the answer states the equation, then the result after
  ``####`` (GSM8K's convention), e.g. ``" 7 + 8 = 15 #### 15"``.
- **shop**: an instruction plus the page the agent sees; the answer is the next action:
  ``search[...]`` on the search page, ``click[ID]`` on the results page (the item matching colour,
  material and budget), ``click[SIZE]`` on the item page, ``buy[ID]`` once the size is chosen.

Every problem has a key (math: operation and operands; shop: the product asked for), and each key
belongs to exactly one split (``train`` for fine-tuning, ``feedback`` for fitness, ``test`` held out),
decided by a hash of the key: no problem, and so no filled-in template, is in two splits.

The pre-training corpus (``pretraining_text``) is what a base model knows beforehand: every equation
of the operand range, and prompts and pages of both domains without their answers.
"""

import hashlib
import random
from dataclasses import dataclass

VERSION = 1  # part of the build cache's key: raise it when what the generators make changes
SPLITS = ("train", "feedback", "test")
SPLIT_SHARES = (0.6, 0.2, 0.2)  # of the keys of each skill, by hash
SKILLS = ("math", "shop")

NAMES = ("Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kim", "Leo", "Mia", "Noa")
ITEMS = ("apples", "books", "coins", "pens", "cards", "shells", "stamps", "marbles", "cookies", "stickers")
# (operation, templates): {n} name, {i} item, {a} {b} operands
MATH_TEMPLATES = {
    "+": (
        "{n} has {a} {i}. {n} buys {b} more {i}. How many {i} does {n} have now?",
        "There are {a} {i} in a box and {b} {i} on the table. How many {i} are there in all?",
        "{n} found {a} {i} on Monday and {b} {i} on Tuesday. How many {i} did {n} find?",
    ),
    "-": (
        "{n} has {a} {i} and gives away {b} of them. How many {i} are left?",
        "A shop had {a} {i} and sold {b}. How many {i} does the shop have now?",
        "{n} collected {a} {i} but lost {b}. How many {i} does {n} still have?",
    ),
    "*": (
        "{n} buys {a} bags with {b} {i} in each bag. How many {i} does {n} buy?",
        "There are {a} rows of {i} with {b} {i} in each row. How many {i} are there?",
        "{n} reads {a} {i} a day for {b} days. How many {i} does {n} read?",
    ),
}
ADD_RANGE, MUL_RANGE = range(2, 16), range(2, 10)

COLORS = ("red", "blue", "green", "black", "white", "grey", "pink", "brown")
MATERIALS = ("cotton", "wool", "linen", "leather", "denim", "silk")
PRODUCTS = ("shirt", "jacket", "scarf", "hat", "dress", "skirt", "coat", "bag", "belt", "sweater")
SIZES = ("s", "m", "l", "xl")
STATES = ("search", "results", "item", "chosen")
SHOP_TEMPLATES = (
    "i need a {c} {m} {p} in size {s}, and price lower than {b} dollars",
    "find me a {c} {p} made of {m}, size {s}, under {b} dollars",
    "i am looking for a {m} {p} in {c} color, size {s}, no more than {b} dollars",
)


@dataclass(frozen=True)
class Example:
    """One problem: the prompt, its answer, the skill and the key that decided its split."""

    skill: str
    prompt: str
    answer: str
    key: tuple


def split_of(skill: str, key: tuple) -> str:
    """The split a problem key belongs to, by a hash of the key (the same on every machine and run)."""
    h = int.from_bytes(hashlib.sha256(repr((skill, key)).encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for split, share in zip(SPLITS, SPLIT_SHARES, strict=True):
        edge += share
        if h < edge:
            return split
    return SPLITS[-1]


def math_keys() -> list[tuple]:
    """Every arithmetic problem: (operation, a, b) with a non-negative result."""
    keys = [("+", a, b) for a in ADD_RANGE for b in ADD_RANGE]
    keys += [("-", a, b) for a in ADD_RANGE for b in ADD_RANGE if b < a]
    keys += [("*", a, b) for a in MUL_RANGE for b in MUL_RANGE]
    return keys


def shop_keys() -> list[tuple]:
    """Every product asked for: (colour, material, product, size)."""
    return [(c, m, p, s) for c in COLORS for m in MATERIALS for p in PRODUCTS for s in SIZES]


def _result(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def equation(op: str, a: int, b: int) -> str:
    return f"{a} {op} {b} = {_result(op, a, b)}"


def math_prompt(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def math_example(key: tuple, rng: random.Random) -> Example:
    op, a, b = key
    question = rng.choice(MATH_TEMPLATES[op]).format(n=rng.choice(NAMES), i=rng.choice(ITEMS), a=a, b=b)
    return Example("math", math_prompt(question), f" {equation(op, a, b)} #### {_result(op, a, b)}", key)


def shop_prompt(instruction: str, observation: str) -> str:
    return f"Instruction: {instruction}\nObservation: {observation}\nAction:"


def shop_page(key: tuple, state: str, rng: random.Random) -> tuple[str, str, str]:
    """(instruction, observation, next action) for the product ``key`` on page ``state``."""
    color, material, product, size = key
    budget = rng.choice((20, 30, 40, 50, 60))
    instruction = rng.choice(SHOP_TEMPLATES).format(c=color, m=material, p=product, s=size, b=budget)
    price = rng.randrange(budget // 2, budget)
    ids = rng.sample(range(10, 100), 3)
    target_id = f"B{ids[0]}"
    if state == "search":
        return instruction, "[search page] [search box]", f"search[{color} {material} {product}]"
    if state == "results":
        other_color = rng.choice([c for c in COLORS if c != color])
        other_material = rng.choice([m for m in MATERIALS if m != material])
        rows = [
            (target_id, f"{color} {material} {product}", price),
            (f"B{ids[1]}", f"{other_color} {material} {product}", rng.randrange(budget // 2, budget)),
            (f"B{ids[2]}", f"{color} {other_material} {product}", rng.randrange(budget // 2, budget)),
        ]
        rng.shuffle(rows)
        listing = " ".join(f"[{i}] {name} ${p}" for i, name, p in rows)
        return instruction, f"[results] {listing}", f"click[{target_id}]"
    options = " ".join(f"[{s}]" for s in SIZES)
    page = f"[item {target_id}] {color} {material} {product} ${price} size: {options}"
    if state == "item":
        return instruction, page, f"click[{size}]"
    return instruction, f"{page} chosen: {size} [buy now]", f"buy[{target_id}]"


def shop_example(key: tuple, rng: random.Random) -> Example:
    state = rng.choice(STATES)
    instruction, observation, action = shop_page(key, state, rng)
    return Example("shop", shop_prompt(instruction, observation), f" {action}", (*key, state))


def examples(skill: str, split: str, n: int, seed: int) -> list[Example]:
    """``n`` distinct problems of ``skill`` from ``split`` (each key at most once), drawn with ``seed``."""
    if skill not in SKILLS:
        raise ValueError(f"skill: expected one of {', '.join(SKILLS)}, got {skill!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    keys = [k for k in (math_keys() if skill == "math" else shop_keys()) if split_of(skill, k) == split]
    if n > len(keys):
        raise ValueError(f"n: the {split} split of {skill} has {len(keys)} problems, {n} were asked for")
    rng = random.Random(f"{skill}-{split}-{seed}")
    make = math_example if skill == "math" else shop_example
    return [make(key, rng) for key in rng.sample(keys, n)]


def training_examples(skill: str, n: int, seed: int) -> list[Example]:
    """``n`` fine-tuning examples from the train split (keys repeat, wording and pages vary)."""
    keys = [k for k in (math_keys() if skill == "math" else shop_keys()) if split_of(skill, k) == "train"]
    rng = random.Random(f"{skill}-train-stream-{seed}")
    make = math_example if skill == "math" else shop_example
    return [make(rng.choice(keys), rng) for _ in range(n)]


def pretraining_text(n: int, seed: int, answered_share: float = 0.0) -> list[str]:
    """A base model's corpus: all equations, and unanswered prompts and pages of the train split.

    ``answered_share`` of the documents are answered training examples of either skill (a little
    exposure to both formats, as a base model has seen before any fine-tuning).
    """
    rng = random.Random(f"pretrain-{seed}")
    equations = [equation(*k) for k in math_keys()]
    train_math = [k for k in math_keys() if split_of("math", k) == "train"]
    train_shop = [k for k in shop_keys() if split_of("shop", k) == "train"]
    docs = []
    for _ in range(n):
        kind = rng.random()
        if kind < answered_share:
            skill = rng.choice(SKILLS)
            ex = (
                math_example(rng.choice(train_math), rng)
                if skill == "math"
                else shop_example(rng.choice(train_shop), rng)
            )
            docs.append(ex.prompt + ex.answer)
        elif kind < answered_share + (1 - answered_share) / 3:
            docs.append(". ".join(rng.sample(equations, 4)) + ".")
        elif kind < answered_share + 2 * (1 - answered_share) / 3:
            docs.append(math_example(rng.choice(train_math), rng).prompt)
        else:
            key = rng.choice(train_shop)
            instruction, observation, _ = shop_page(key, rng.choice(STATES), rng)
            docs.append(shop_prompt(instruction, observation))
    return docs
