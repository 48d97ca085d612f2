"""Schemathesis hooks for ``test_fuzz``: a refused call must leave the store as it was; /evolve stays short.

Loaded by the ``st`` command through ``SCHEMATHESIS_HOOKS``; ``M2N2_FUZZ_DATA_DIR`` names the
served data directory. Calls run one at a time, so the store's fingerprint taken before a call
is compared with the one after it.
"""

import os
import sqlite3
from pathlib import Path

import schemathesis

MAX_STEPS = 2  # /evolve's budget is capped: a long tick is a valid request, not a finding
_before: dict[str, object] = {}


def fingerprint(data_dir: Path) -> dict[str, object]:
    """The store's rows per table, its newest model id, the champion and the artifact files."""
    with sqlite3.connect(f"file:{data_dir / 'ecosystem.db'}?mode=ro", uri=True) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables.remove("workers")  # the serving workers' heartbeats, written on their own schedule
        state: dict[str, object] = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        state["champion"] = db.execute("SELECT * FROM champion").fetchall()
        state["newest model"] = db.execute("SELECT max(id) FROM models").fetchone()
    state["artifacts"] = sorted(p.name for p in (data_dir / "artifacts").rglob("*"))
    return state


def _data_dir() -> Path:
    return Path(os.environ["M2N2_FUZZ_DATA_DIR"])


@schemathesis.hook
def before_call(context, case, kwargs) -> None:
    if case.path == "/evolve" and isinstance(case.body, dict) and isinstance(case.body.get("steps"), int):
        case.body["steps"] = min(case.body["steps"], MAX_STEPS)
    _before["state"] = fingerprint(_data_dir())


@schemathesis.check
def store_unchanged_after_refusal(ctx, response, case) -> bool | None:
    """A 4xx answer means nothing was stored, deleted or moved."""
    if 400 <= response.status_code < 500 and fingerprint(_data_dir()) != _before.get("state"):
        raise AssertionError(f"{case.method} {case.path} answered {response.status_code} but changed the store")
    return None
