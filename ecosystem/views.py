"""What the web page at ``/ui`` draws: niches, the champion's ancestry, and gate points to sample.

Each function reads the store only (stored scores, never computing new ones), so the page can
poll them while the evolver runs without slowing it or taking a write lock. A score that was
never stored shows as ``None``.

- ``niches``: the archive members' scores on every fitness point, the points grouped by task
  and then into *niches* (clusters of points the members score alike), each niche's crowding.
- ``ancestry``: a model's ancestors as nodes of a tree, each merge's split point located in its
  tensor (name, offset, fraction of all parameters), each model's mean stored score per task.
- ``sample_points``: a few gate points per task and the champion's stored scores on them; the
  service adds the served champion's answers.
"""

import bisect
from collections.abc import Sequence
from typing import Any

import torch

from ecosystem import store
from ecosystem.errors import NotFound
from ecosystem.orm import Model
from ecosystem.runtime import Runtime
from m2n2.space import ParamSpace

DEPTH = 8  # generations of ancestry the page asks for: a lineage can be thousands of generations deep
SAMPLES = 4  # gate points per task the page shows answers for
CLUSTERS = 8  # niches per task at most: few enough to read, enough to separate the specialists' skills
TIE = 1e-6  # scores this close to a point's best score tie with it
ITERATIONS = 25  # Lloyd iterations at most; it stops earlier once no point moves


def niches(runtime: Runtime) -> dict[str, Any]:
    """The archive × fitness-points score matrix, its points grouped by task and then into niches.

    A *niche* is a cluster of a task's points that the members score alike: k-means on the
    points' score columns (one score per member; an unstored score counts as 0), k at most
    ``CLUSTERS``, started from the most common column and then the farthest point, so the
    same scores always give the same niches. A niche's *crowding* is the mean over its points
    of z_j, the summed member scores (the divisor of M2N2's resource competition: a crowded
    point is worth less to each member solving it). Niches are ordered largest first, and
    points within a niche by how many members solve them, then by id. A point's best member is
    the lowest slot among those tied for its best score; ``sharing`` says how many are tied (a
    point only one member solves is that member's own niche).
    """
    with runtime.sessions() as session:
        members = store.archive(session)  # {slot: Model}
        current = store.champion(session)
        windows = [(task.name, store.fitness_window_ids(session, task)) for task in store.list_tasks(session)]
        ids = [p for _, point_ids in windows for p in point_ids]
        stored = store.scores_for(session, [m.id for m in members.values()], ids)
    slots = list(members)
    shape = (len(slots), len(ids))  # (n_members, n_points), kept when either is 0
    known = torch.tensor([[(members[s].id, p) in stored for p in ids] for s in slots], dtype=torch.bool).reshape(shape)
    scores = torch.tensor([[stored.get((members[s].id, p), 0.0) for p in ids] for s in slots]).reshape(shape)

    order: list[int] = []  # columns of ``scores`` in display order
    groups = []
    start = 0
    for task, point_ids in windows:
        columns = scores[:, start : start + len(point_ids)].T  # (n_task_points, n_members)
        labels = _clusters(columns)
        sizes = torch.bincount(labels, minlength=int(labels.max()) + 1) if len(labels) else torch.zeros(0)
        for k in sorted(range(len(sizes)), key=lambda k: (-int(sizes[k]), k)):
            where = torch.nonzero(labels == k).flatten()
            if not len(where):
                continue
            z = columns[where].sum(dim=1)  # (n_niche_points,)
            where = where[torch.argsort(-z, stable=True)]  # most solved first; ids ascend within a tie
            profile = columns[where].mean(dim=0)  # (n_members,): each member's mean score on the niche
            groups.append(
                {
                    "task": task,
                    "start": len(order),
                    "points": len(where),
                    "crowding": float(z.mean()),
                    "best": slots[int(torch.argmax(profile))] if len(slots) else None,
                    "profile": [round(float(v), 4) for v in profile],
                }
            )
            order.extend(start + int(i) for i in where)
        start += len(point_ids)

    ordered = scores[:, order]  # (n_members, n_points)
    best = torch.argmax(ordered, dim=0) if len(slots) else torch.zeros(len(order), dtype=torch.long)  # first on ties
    solved = ordered.amax(dim=0) if len(slots) else torch.zeros(len(order))  # (n_points,)
    sharing = ((ordered >= solved - TIE) & (solved > 0)).sum(dim=0)  # (n_points,): members tied for the best
    tasks, start = [], 0
    for task, point_ids in windows:  # a task's points stay together in display order
        part = solved[start : start + len(point_ids)]
        tasks.append({"name": task, "points": len(point_ids), "coverage": float(part.mean()) if len(part) else None})
        start += len(point_ids)
    cells = [
        [round(v, 4) if k else None for v, k in zip(row, mask, strict=True)]
        for row, mask in zip(ordered.tolist(), known[:, order].tolist(), strict=True)
    ]
    return {
        "members": [_member(members[s], s, current is not None and current.model_id == members[s].id) for s in slots],
        "point_ids": [ids[c] for c in order],
        "scores": cells,
        "best": [slots[int(i)] if float(v) > 0 else None for i, v in zip(best, solved, strict=True)],
        "sharing": sharing.tolist(),
        "niches": groups,
        "tasks": tasks,
        "coverage": float(solved.mean()) if len(order) else None,
    }


def _clusters(columns: torch.Tensor, k: int = CLUSTERS) -> torch.Tensor:
    """Deterministic k-means of score columns (n_points, n_members): a cluster label per point."""
    if len(columns) == 0 or columns.shape[1] == 0:  # no points, or no members to tell points apart
        return torch.zeros(len(columns), dtype=torch.long)
    distinct, counts = torch.unique(columns, dim=0, return_counts=True)
    k = min(k, len(distinct))
    centres = [distinct[int(torch.argmax(counts))]]  # the most common column: a typical point
    while len(centres) < k:  # then the point farthest from every centre so far (the first on ties)
        nearest = torch.cdist(distinct, torch.stack(centres)).amin(dim=1)
        centres.append(distinct[int(torch.argmax(nearest))])
    centres = torch.stack(centres)  # (k, n_members)
    labels = torch.cdist(columns, centres).argmin(dim=1)
    for _ in range(ITERATIONS):
        mine = [labels == j for j in range(k)]
        centres = torch.stack([columns[m].mean(dim=0) if m.any() else c for m, c in zip(mine, centres, strict=True)])
        moved = torch.cdist(columns, centres).argmin(dim=1)
        if torch.equal(moved, labels):
            break
        labels = moved
    return labels


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _member(model: Model, slot: int, champion: bool) -> dict[str, Any]:
    return {
        "slot": slot,
        "model": model.name,
        "model_id": model.id,
        "kind": model.kind,
        "generation": model.generation,
        "champion": champion,
    }


def locate_split(space: ParamSpace, split_point: int) -> dict[str, Any]:
    """Where a global split point falls: the tensor holding it, the index within that tensor, the fraction of all."""
    offsets = [spec.offset for spec in space]
    spec = space.specs[max(bisect.bisect_right(offsets, split_point) - 1, 0)]
    return {
        "index": split_point,
        "fraction": split_point / space.dim if space.dim else 0.0,
        "tensor": spec.name,
        "tensor_index": split_point - spec.offset,
        "tensor_numel": spec.numel,
    }


def ancestry(runtime: Runtime, model_ref: str | int | None = None, max_depth: int = DEPTH) -> dict[str, Any]:
    """The model (default: the champion) and its ancestors up to ``max_depth`` merges back, as tree nodes.

    A shared ancestor appears once (at its nearest depth); a parent beyond ``max_depth`` is
    named but has no node. Scores per task are means of the stored scores on the current
    fitness window and gate set (None where none are stored).
    """
    with runtime.sessions() as session:
        if model_ref is None:
            current = store.champion(session)
            if current is None:
                raise NotFound("there is no champion yet; name a model")
            model_ref = current.model_id
        root = store.model_by_name_or_id(session, model_ref)
        ancestors = store.lineage(session, root.id, max_depth=max_depth)
        current = store.champion(session)
        slots = {m.id: slot for slot, m in store.archive(session).items()}
        space = runtime.family(session)[2]
        tasks = store.list_tasks(session)
        pools = {
            "fitness": [(t.name, store.fitness_window_ids(session, t)) for t in tasks],
            "gate": [(t.name, [p.id for p in store.gate_points(session, t)]) for t in tasks],
        }
        model_ids = [a.model.id for a in ancestors]
        point_ids = [p for per_task in pools.values() for _, ids in per_task for p in ids]
        stored = store.scores_for(session, model_ids, point_ids)
        names = {a.model.id: a.model.name for a in ancestors}
        for a in ancestors:  # parents beyond max_depth: named, without a node
            for pid in a.model.parent_ids:
                if pid not in names:
                    names[pid] = store.get_model(session, pid).name
    nodes = []
    for a in ancestors:
        m = a.model
        parents = [{"role": role, "model": names[pid], "model_id": pid} for role, pid in _parents(m)]
        nodes.append(
            {
                "model": m.name,
                "model_id": m.id,
                "depth": a.depth,
                "kind": m.kind,
                "operator": m.operator,
                "generation": m.generation,
                "parents": parents,
                "split": None if m.split_point is None else locate_split(space, m.split_point),
                "mixing_ratio": m.mixing_ratio,
                "sha256": m.sha256,
                "n_bytes": m.n_bytes,
                "registered_by": m.registered_by,
                "source": m.source,
                "licence": m.licence,
                "created_at": m.created_at,
                "slot": slots.get(m.id),
                "champion": current is not None and current.model_id == m.id,
                "fitness": _means(stored, m.id, pools["fitness"]),
                "gate": _means(stored, m.id, pools["gate"]),
            }
        )
    return {
        "model": root.name,
        "version": None if current is None or current.model_id != root.id else current.version,
        "max_depth": max_depth,
        "n_params": space.dim,
        "nodes": nodes,
    }


def _parents(model: Model) -> list[tuple[str, int]]:
    return [(role, pid) for role, pid in (("a", model.parent_a_id), ("b", model.parent_b_id)) if pid is not None]


def _means(
    stored: dict[tuple[int, int], float], model_id: int, per_task: Sequence[tuple[str, list[int]]]
) -> dict[str, float | None]:
    """Mean stored score per task of one model (None where it has no stored score on the task's points)."""
    means = {}
    for task, ids in per_task:
        means[task] = _mean([stored[(model_id, p)] for p in ids if (model_id, p) in stored])
    return means


def sample_points(runtime: Runtime, model_id: int, per_task: int = SAMPLES) -> list[dict[str, Any]]:
    """The newest ``per_task`` gate points of each task, with the model's stored score on each (None if unscored)."""
    with runtime.sessions() as session:
        points = [(t.name, p) for t in store.list_tasks(session) for p in store.gate_points(session, t, per_task)]
        stored = store.scores_for(session, [model_id], [p.id for _, p in points])
    return [
        {"point_id": p.id, "task": task, "inputs": p.inputs, "target": p.target, "score": stored.get((model_id, p.id))}
        for task, p in points
    ]
