"""What the CLI and the HTTP service show: status, lineage, champion moves, registrations, exports.

``collect_status``, ``status``, ``lineage_rows`` and ``champion_move`` gather plain JSON-ready
data (``m2n2 status --json`` prints it as is; the service answers it); the ``format_*``
functions turn data into text and touch no database. ``export_model`` writes a model in its
family's native layout with a model card, for ``m2n2 export`` and ``/export`` alike.
"""

import math
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.orm import Session

from ecosystem import scoring, store, weights
from ecosystem.db import begin_write
from ecosystem.errors import Conflict
from ecosystem.orm import ChampionEvent, Model, WorkerState
from ecosystem.runtime import Runtime
from ecosystem.specialists import Registration

Scores = dict[str, float | None]  # task name -> mean score (None: the task has no such points yet)
HISTORY = 20  # champion moves ``status`` lists
WEIGHTS, CARD = "model.safetensors", "README.md"  # the classifier's exported file; every export's model card


def per_task(scores: torch.Tensor, points: scoring.PointSet) -> Scores:
    """Mean per task of scores on ``points`` (shape (n_points,)); None for a task without points."""
    return {
        task: float(scores[where].mean()) if where.stop > where.start else None
        for task, where in points.task_slices().items()
    }


def collect_status(session: Session, runtime: Runtime) -> dict[str, Any]:
    """The archive, each member's fitness and gate scores, coverage, and the champion, as JSON-ready data.

    Gate scores not yet stored are computed and stored (as promotion does), so the caller
    commits; open the transaction with ``begin_write``.
    """
    eco = store.get_ecosystem(session)
    fitness, gate = scoring.fitness_set(session), scoring.gate_set(session)
    current = store.champion(session)
    members = store.archive(session)
    rows = [scoring.model_scores(session, runtime, m, fitness) for m in members.values()]  # (n_fitness,) each
    archive = []
    for (slot, model), scores in zip(members.items(), rows, strict=True):
        archive.append(
            {
                "slot": slot,
                "model": model.name,
                "model_id": model.id,
                "kind": model.kind,
                "generation": model.generation,
                "champion": current is not None and current.model_id == model.id,
                "fitness": per_task(scores, fitness),
                "gate": per_task(scoring.model_scores(session, runtime, model, gate), gate),
            }
        )
    # Coverage: per point, the best member's score, averaged (the share of points solved, for binary scores).
    best = torch.stack(rows).amax(dim=0) if rows else torch.zeros(len(fitness))  # (n_fitness,)
    champion = None
    if current is not None:
        model = store.get_model(session, current.model_id)
        champion = {
            "model": model.name,
            "model_id": model.id,
            "version": current.version,
            "in_archive": any(m.id == model.id for m in members.values()),
            "gate": per_task(scoring.model_scores(session, runtime, model, gate), gate),
        }
    saved = store.load_evolution_state(session)
    tasks = []
    for task in store.list_tasks(session):
        counts = store.count_points(session, task)
        tasks.append(
            {
                "name": task.name,
                "scoring": task.scoring,
                "window": task.window,
                "gate_share": task.gate_share,
                "fitness_points": counts["fitness"],
                "gate_points": counts["gate"],
            }
        )
    return {
        "data_dir": str(runtime.settings.data_dir),
        "family": eco.family,
        "family_config": eco.family_config,
        "archive_size": eco.archive_size,
        "steps": saved.steps if saved else 0,
        "tasks": tasks,
        "archive": archive,
        "coverage": {"all": float(best.mean()) if len(fitness) else None, "tasks": per_task(best, fitness)},
        "champion": champion,
    }


def status(runtime: Runtime, history: int = HISTORY) -> dict[str, Any]:
    """``collect_status`` in its own transaction, plus the newest ``history`` champion moves (newest first)."""
    with runtime.sessions() as session:
        begin_write(session)  # gate scores not stored yet are computed and kept
        data = collect_status(session, runtime)
        data["history"] = [champion_move(session, event) for event in store.champion_history(session, history)]
        data["workers"] = [worker_state(session, worker) for worker in store.live_workers(session)]
        session.commit()
    return data


def worker_state(session: Session, worker: WorkerState) -> dict[str, Any]:
    """What one serving worker serves, and the champion version it could not load (then it is behind)."""
    model = None if worker.model_id is None else store.get_model(session, worker.model_id).name
    fields = ("worker", "version", "failed_version", "error", "seen_at")
    return {**{f: getattr(worker, f) for f in fields}, "model": model, "behind": worker.failed_version is not None}


def champion_move(session: Session, event: ChampionEvent) -> dict[str, Any]:
    """A promotion or rollback with the gate evidence behind it, models named."""
    previous = None if event.previous_model_id is None else store.get_model(session, event.previous_model_id).name
    fields = ("action", "version", "champion_score", "challenger_score", "p_value", "n_points", "reason", "actor")
    return {
        **{f: getattr(event, f) for f in fields},
        "model": store.get_model(session, event.model_id).name,
        "previous_model": previous,
        "created_at": event.created_at,
    }


def newest_move(runtime: Runtime) -> dict[str, Any]:
    """The newest champion move (what a promote or rollback just did)."""
    with runtime.sessions() as session:
        return champion_move(session, store.champion_history(session, 1)[0])


def lineage_rows(runtime: Runtime, model_ref: str | int, max_depth: int | None = None) -> list[dict[str, Any]]:
    """The model and every ancestor as JSON-ready rows: how each was made, its parents by name, source, licence."""
    with runtime.sessions() as session:
        ancestors = store.lineage(session, store.model_by_name_or_id(session, model_ref).id, max_depth=max_depth)
    names = {a.model.id: a.model.name for a in ancestors}
    fields = ("kind", "operator", "generation", "split_point", "mixing_ratio", "sha256", "registered_by", "source")
    return [
        {
            "model": a.model.name,
            "model_id": a.model.id,
            "depth": a.depth,
            **{f: getattr(a.model, f) for f in fields},
            "licence": a.model.licence,
            "parents": [names.get(p, str(p)) for p in a.model.parent_ids],
            "created_at": a.model.created_at,
        }
        for a in ancestors
    ]


def format_status(status: dict[str, Any]) -> str:
    """The status as a table (one row per archive slot, ``*`` marks the champion) and a few summary lines."""
    tasks = [t["name"] for t in status["tasks"]]
    header = ["slot", "model", "gen", *(f"{t} (fitness)" for t in tasks), "champion"]
    rows = [
        [
            str(m["slot"]),
            m["model"],
            str(m["generation"]),
            *(_score(m["fitness"].get(t)) for t in tasks),
            "*" if m["champion"] else "",
        ]
        for m in status["archive"]
    ]
    lines = [
        f"ecosystem: {status['family']} {status['family_config']} in {status['data_dir']}",
        f"evolution: {status['steps']} steps; archive {len(rows)}/{status['archive_size']} slots",
    ]
    for t in status["tasks"]:
        lines.append(
            f"task {t['name']}: {t['scoring']}, window {t['window']}, "
            f"{t['fitness_points']} fitness / {t['gate_points']} gate points"
        )
    lines += ["", *_table(header, rows), ""]
    coverage = status["coverage"]
    lines.append(
        f"coverage: {_score(coverage['all'])}"
        + "".join(f"; {t} {_score(coverage['tasks'].get(t))}" for t in tasks if len(tasks) > 1)
    )
    champion = status["champion"]
    if champion is None:
        lines.append("champion: none yet")
    else:
        where = "" if champion["in_archive"] else ", no longer in the archive"
        gate = ", ".join(f"{t} {_score(champion['gate'].get(t))}" for t in tasks) or "no tasks"
        lines.append(f"champion: {champion['model']} (version {champion['version']}{where}); gate score: {gate}")
    return "\n".join(lines)


def format_lineage(ancestors: Sequence[store.Ancestor]) -> str:
    """The ancestry of ``ancestors[0]`` as a tree; a shared ancestor is drawn once, then referred to."""
    by_id = {a.model.id: a.model for a in ancestors}
    lines, shown = [], set()
    stack: list[tuple[Model | None, str, str]] = [(ancestors[0].model, "", "")]  # (model, first line, indent)
    while stack:  # depth first, without recursion: lineages can be thousands of generations deep
        model, first, indent = stack.pop()
        if model is None:
            lines.append(f"{first}(older ancestors not shown)")
            continue
        if model.id in shown:
            lines.append(f"{first}{model.name} (shown above)")
            continue
        shown.add(model.id)
        lines.append(f"{first}{describe(model)}")
        parents = [(role, pid) for role, pid in (("a", model.parent_a_id), ("b", model.parent_b_id)) if pid is not None]
        for i in reversed(range(len(parents))):
            role, pid = parents[i]
            last = i == len(parents) - 1
            stack.append(
                (by_id.get(pid), f"{indent}{'└── ' if last else '├── '}{role}: ", indent + ("    " if last else "│   "))
            )
    return "\n".join(lines)


def describe(model: Model) -> str:
    """One line about a model: how it was made, or where it came from."""
    if model.kind == "specialist":
        facts = [f"specialist, generation {model.generation}"]
        facts += [
            f"{label}: {value}" for label, value in (("source", model.source), ("licence", model.licence)) if value
        ]
    else:
        facts = [f"{model.operator}, generation {model.generation}"]
        if model.split_point is not None:
            facts.append(f"split point {model.split_point}")
        if model.mixing_ratio is not None:
            facts.append(f"mixing ratio {model.mixing_ratio:.4f}")
    return f"{model.name} ({'; '.join(facts)})"


def licences(models: Iterable[Model]) -> tuple[list[str], list[str]]:
    """The licences stated by ``models``, and the specialists that state none (merges inherit, never add)."""
    stated, unstated = set(), []
    for model in models:
        if model.licence:
            stated.add(model.licence)
        elif model.kind == "specialist":
            unstated.append(model.name)
    return sorted(stated), unstated


def format_model_card(
    ancestors: Sequence[store.Ancestor], family: str, config: dict[str, Any], files: Sequence[str] = (WEIGHTS,)
) -> str:
    """A README.md for an exported model: what it is, every ancestor with source, licence and merge, the licences."""
    model = ancestors[0].model
    stated, unstated = licences(a.model for a in ancestors)
    made = (
        "a specialist registered in the ecosystem"
        if model.kind == "specialist"
        else f"a merge made by M2N2 (generation {model.generation}, {len(ancestors) - 1} ancestors)"
    )
    lines = [
        f"# {model.name}",
        "",
        f"A `{family}` model with config `{config}` exported from an m2n2 ecosystem: {made}.",
        "",
        f"- files: {', '.join(f'`{f}`' for f in files)}",
        f"- weights as stored in the ecosystem: sha256 `{model.sha256}`, {model.n_bytes} bytes",
        f"- created: {model.created_at.isoformat()}",
    ]
    if model.registered_by:
        lines.append(f"- registered by: {model.registered_by}")
    lines += ["", "## Licences", ""]
    if stated:
        lines.append("Licences involved: " + ", ".join(f"`{s}`" for s in stated) + ".")
        if model.kind != "specialist":
            lines.append("A merge derives from every ancestor's weights: each of these licences applies.")
    else:
        lines.append("No ancestor states a licence.")
    if unstated:
        lines.append(f"Specialists without a stated licence: {', '.join(unstated)}.")
    lines += [
        "",
        "## Ancestry",
        "",
        "Depth 0 is this model. A child lies on the SLERP arc from parent A to parent B: at fraction "
        "*mixing ratio* on parameters before the *split point* (a global parameter index), at 1 - mixing ratio "
        "from it on (M2N2, https://arxiv.org/abs/2508.16204).",
        "",
    ]
    header = ["depth", "model", "kind", "operator", "parent A", "parent B", "split point", "mixing ratio"]
    header += ["source", "licence"]
    names = {a.model.id: a.model.name for a in ancestors}
    rows = []
    for a in ancestors:
        m = a.model
        rows.append(
            [
                str(a.depth),
                m.name,
                m.kind,
                m.operator,
                _parent(m.parent_a_id, names),
                _parent(m.parent_b_id, names),
                "" if m.split_point is None else str(m.split_point),
                "" if m.mixing_ratio is None else f"{m.mixing_ratio:.4f}",
                m.source or "",
                m.licence or "",
            ]
        )
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def format_registration(r: Registration) -> str:
    """Where a registered model landed, and its mean fitness-window score per task."""
    if r.duplicate:
        return f"these weights are already stored as model {r.name} (id {r.model_id}); nothing changed"
    scores = ", ".join(f"{task} {value:.4f}" for task, value in r.scores.items()) or "no fitness points yet"
    where = f"did not enter the archive ({r.reason})"
    if r.entered:
        where = f"entered the archive in slot {r.slot}" + (f", displacing {r.displaced}" if r.displaced else "")
    return f"registered {r.name} (id {r.model_id}): {where}; fitness {scores}"


def export_model(runtime: Runtime, model_ref: str, directory: str | os.PathLike) -> list[store.Ancestor]:
    """Write the model in its family's native layout plus ``README.md`` (the model card); returns the lineage.

    ``directory`` must be new or empty, so an export never mixes with other files.
    """
    with runtime.sessions() as session:
        model = store.model_by_name_or_id(session, model_ref)
        ancestors = store.lineage(session, model.id)
        family, config, _ = runtime.family(session)
    weights.ensure(runtime, model)  # an evicted child is rebuilt from its lineage first
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise Conflict(f"{directory} already exists and is not empty; export into a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    with runtime.source(model) as source:
        written = family.export(config, source, directory)
    files = sorted(p.relative_to(directory).as_posix() for p in written)
    card = format_model_card(ancestors, family.name, config, files)
    (directory / CARD).write_text(card, encoding="utf-8")
    return ancestors


def export_zip(runtime: Runtime, model_ref: str, directory: str | os.PathLike) -> Path:
    """``export_model`` into a temporary folder of ``directory``, packed as one zip (for downloads); its path."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        export_model(runtime, model_ref, Path(tmp))
        archive = directory / "model.zip"
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for path in sorted(p for p in Path(tmp).rglob("*") if p.is_file()):
                zf.write(path, path.relative_to(tmp).as_posix())
    return archive


def _parent(model_id: int | None, names: dict[int, str]) -> str:
    return "" if model_id is None else names.get(model_id, f"id {model_id}")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _score(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
