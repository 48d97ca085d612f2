"""Store queries on SQLite and PostgreSQL, each test in a transaction that is rolled back."""

import hashlib
from datetime import UTC

import pytest
import torch
from sqlalchemy.orm import Session

from ecosystem import points, store
from ecosystem.errors import Conflict, InvalidInput, NotFound
from m2n2.space import ParamSpace


def _task(session: Session, name: str = "digits", window: int = 1000, gate_share: float = 0.2):
    return store.create_task(session, name=name, scoring="accuracy", window=window, gate_share=gate_share)


def _points(n: int, start: int = 0) -> list[dict]:
    return [{"inputs": [i, i + 1], "target": i % 10} for i in range(start, start + n)]


def test_lineage_three_generations(session, specialist, child):
    a, b = specialist("math"), specialist("agent")
    c1 = child("c1", a, b, split_point=3, ratio=0.3)
    c2 = child("c2", c1, b, split_point=11, ratio=0.6)
    c3 = child("c3", c2, c1, split_point=5, ratio=0.9)
    session.commit()
    session.expire_all()

    found = store.lineage(session, c3.id)
    assert [(x.model.name, x.depth) for x in found] == [("c3", 0), ("c1", 1), ("c2", 1), ("math", 2), ("agent", 2)]
    by_name = {x.model.name: x.model for x in found}
    assert [by_name[n].generation for n in ("math", "agent", "c1", "c2", "c3")] == [0, 0, 1, 2, 3]
    assert by_name["c2"].parent_ids == (c1.id, b.id)
    assert (by_name["c2"].operator, by_name["c2"].split_point, by_name["c2"].mixing_ratio) == ("split_slerp", 11, 0.6)
    assert by_name["math"].parent_ids == () and by_name["math"].operator == "registered"
    assert by_name["c3"].parent_a.name == "c2"
    assert [x.model.name for x in store.lineage(session, c3.id, max_depth=1)] == ["c3", "c1", "c2"]


def test_add_model_checks_its_input(session, specialist, child):
    a = specialist("math")
    with pytest.raises(Conflict, match="'math'"):
        store.add_model(session, name="other", sha256=a.sha256, n_bytes=1)
    with pytest.raises(Conflict, match="named 'math'"):
        store.add_model(session, name="math", sha256="0" * 64, n_bytes=1)
    with pytest.raises(InvalidInput, match="specialist has no parents"):
        store.add_model(session, name="x", sha256="1" * 64, n_bytes=1, parent_a_id=a.id)
    with pytest.raises(InvalidInput, match="parent_a_id"):
        store.add_model(session, name="x", sha256="1" * 64, n_bytes=1, kind="child", operator="split_slerp")
    with pytest.raises(InvalidInput, match="digits"):
        store.add_model(session, name="42", sha256="1" * 64, n_bytes=1)
    with pytest.raises(InvalidInput, match="sha256"):
        store.add_model(session, name="x", sha256="../etc", n_bytes=1)
    with pytest.raises(NotFound, match="id 999"):
        store.add_model(session, name="x", sha256="1" * 64, n_bytes=1, kind="child", operator="m", parent_a_id=999)
    mutant = child("mutant", a, None)
    assert mutant.generation == 1 and mutant.parent_ids == (a.id,)
    assert store.model_by_name_or_id(session, "math").id == a.id
    assert store.model_by_name_or_id(session, str(a.id)).name == "math"
    assert store.model_by_name_or_id(session, a.id).name == "math"
    assert store.find_model_by_sha(session, a.sha256).id == a.id
    assert [m.name for m in store.list_models(session, kind="child")] == ["mutant"]
    with pytest.raises(NotFound, match="'nope'"):
        store.model_by_name_or_id(session, "nope")


def sha(name: str) -> str:
    """The stand-in artifact hash the ``specialist`` and ``child`` fixtures give a model named ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


def _new_child(name: str, parent_a, parent_b=None, **kwargs) -> store.NewChild:
    fields = {"n_bytes": 1000, "operator": "split_slerp", "split_point": 7, "mixing_ratio": 0.25} | kwargs
    return store.NewChild(name=name, sha256=sha(name), parent_a=parent_a, parent_b=parent_b, **fields)


def test_add_children_records_a_batch_whose_children_have_children(session, specialist):
    a, b = specialist("math"), specialist("agent")
    c1 = _new_child("c1", a.id, b.id, split_point=3, mixing_ratio=0.3)
    c2 = _new_child("c2", c1, b.id, split_point=11, mixing_ratio=0.6)  # a child of a child of the same batch
    c3 = _new_child("c3", c2, c1, source="m2n2 evolver")
    mutant = _new_child("mutant", c3, operator="mutation", split_point=None, mixing_ratio=None)
    ids = store.add_children(session, [c1, c2, c3, mutant])
    assert store.add_children(session, []) == []
    session.commit()
    session.expire_all()

    rows = [store.get_model(session, i) for i in ids]
    assert [m.name for m in rows] == ["c1", "c2", "c3", "mutant"]
    assert [m.parent_ids for m in rows] == [(a.id, b.id), (ids[0], b.id), (ids[1], ids[0]), (ids[2],)]
    assert [m.generation for m in rows] == [1, 2, 3, 4]
    assert [(m.operator, m.split_point, m.mixing_ratio) for m in rows[1:]] == [
        ("split_slerp", 11, 0.6),
        ("split_slerp", 7, 0.25),
        ("mutation", None, None),
    ]
    assert {m.kind for m in rows} == {"child"} and rows[2].source == "m2n2 evolver"
    assert [m.sha256 for m in rows] == [sha(m.name) for m in rows] and rows[0].created_at.tzinfo is not None
    assert [x.model.name for x in store.lineage(session, ids[3])] == ["mutant", "c3", "c1", "c2", "math", "agent"]
    # Ids were reserved, not guessed: rows added one at a time afterwards take fresh ones.
    assert specialist("later").id > max(ids)
    assert store.add_children(session, [_new_child("c4", ids[3])])[0] > max(ids)


def test_add_children_checks_the_whole_batch_first(session, specialist):
    a = specialist("math")
    stored_before = len(store.list_models(session))
    with pytest.raises(Conflict, match="named 'math'"):
        store.add_children(session, [_new_child("c1", a.id), store.NewChild("math", sha("m2"), 1, "mutation", a.id)])
    with pytest.raises(Conflict, match="'c1'"):
        store.add_children(session, [_new_child("c1", a.id), _new_child("c1", a.id)])
    with pytest.raises(Conflict, match="with weights"):
        store.add_children(session, [store.NewChild("c1", a.sha256, 1, "mutation", a.id)])
    with pytest.raises(NotFound, match="id 999"):
        store.add_children(session, [_new_child("c1", a.id), _new_child("c2", 999)])
    with pytest.raises(InvalidInput, match="not earlier in the same batch"):
        store.add_children(session, [_new_child("c2", _new_child("c1", a.id))])
    with pytest.raises(InvalidInput, match="mixing_ratio"):
        store.add_children(session, [_new_child("c1", a.id, mixing_ratio=1.5)])
    with pytest.raises(InvalidInput, match="digits"):
        store.add_children(session, [_new_child("42", a.id)])
    assert len(store.list_models(session)) == stored_before


def test_timestamps_read_back_aware_in_utc(session, specialist):
    model_id = specialist("math").id
    session.commit()
    session.expire_all()
    created = store.get_model(session, model_id).created_at
    assert created.tzinfo is not None and created.utcoffset().total_seconds() == 0
    assert created.astimezone(UTC) == created


def test_ecosystem_round_trip(session):
    with pytest.raises(NotFound, match="no ecosystem"):
        store.get_ecosystem(session)
    space = ParamSpace([("w", (2, 3), torch.float32), ("b", (3,), torch.bfloat16)])
    store.create_ecosystem(session, family="classifier", family_config={"layers": [6, 3]}, space=space, archive_size=4)
    session.commit()
    session.expire_all()
    ecosystem = store.get_ecosystem(session)
    assert ecosystem.family_config == {"layers": [6, 3]} and ecosystem.alpha == 1.0
    assert store.space_from_json(ecosystem.space) == space
    with pytest.raises(Conflict, match="already holds an ecosystem"):
        store.create_ecosystem(session, family="classifier", family_config={}, space=space, archive_size=4)


def test_content_hash_is_the_documented_formula():
    expected = hashlib.sha256(b'digits\n{"inputs":{"a":1,"b":[2,3]},"target":7}').hexdigest()
    assert points.content_hash("digits", {"b": [2, 3], "a": 1}, 7) == expected
    assert points.assign_pool("00000000" + "f" * 56, 0.0) == "fitness"
    assert points.assign_pool("ffffffff" + "0" * 56, 1.0) == "gate"


def test_pool_assignment_is_deterministic(session):
    task = _task(session, gate_share=0.3)
    added, _ = store.add_points(session, task, _points(200))
    expected = [points.assign_pool(points.content_hash("digits", p["inputs"], p["target"]), 0.3) for p in _points(200)]
    assert [p.pool for p in added] == expected
    assert 40 <= expected.count("gate") <= 80  # 30% of 200, give or take
    # The same content in another task lands independently, but again deterministically.
    other = _task(session, name="digits-b", gate_share=0.3)
    again, _ = store.add_points(session, other, _points(200))
    assert [p.pool for p in again] != expected
    assert [p.pool for p in again] == [
        points.assign_pool(points.content_hash("digits-b", p["inputs"], p["target"]), 0.3) for p in _points(200)
    ]


@pytest.mark.parametrize(("gate_share", "pool"), [(0.0, "fitness"), (1.0, "gate")])
def test_gate_share_edges(session, gate_share, pool):
    task = _task(session, gate_share=gate_share)
    added, _ = store.add_points(session, task, _points(100))
    assert {p.pool for p in added} == {pool}


def test_explicit_pool_wins_and_is_checked(session):
    never, always = _task(session, "never", gate_share=0.0), _task(session, "always", gate_share=1.0)
    (point,), _ = store.add_points(session, never, [{"inputs": [1], "target": 1, "pool": "gate"}])
    assert point.pool == "gate"
    (point,), _ = store.add_points(session, always, [{"inputs": [1], "target": 1, "pool": "fitness", "weight": 2}])
    assert (point.pool, point.weight) == ("fitness", 2.0)
    bad = [{"inputs": [2], "target": 2}, {"inputs": [3], "target": 3, "pool": "test"}]
    with pytest.raises(InvalidInput, match=r"point #1: pool 'test'"):
        store.add_points(session, never, bad)
    assert store.count_points(session, never) == {"fitness": 0, "gate": 1}  # nothing of the bad batch was stored
    with pytest.raises(InvalidInput, match="weight"):
        store.add_points(session, never, [{"inputs": [4], "target": 4, "weight": float("nan")}])
    with pytest.raises(InvalidInput, match="not JSON"):
        store.add_points(session, never, [{"inputs": [float("inf")], "target": 4}])
    with pytest.raises(InvalidInput, match="unknown keys"):
        store.add_points(session, never, [{"inputs": [4], "label": 4}])


def test_window_is_the_newest_fitness_points_only(session):
    task = _task(session, window=5, gate_share=0.5)
    added, _ = store.add_points(session, task, _points(40))
    fitness = [p.id for p in added if p.pool == "fitness"]
    gate = [p.id for p in added if p.pool == "gate"]
    assert len(fitness) > 5 and gate
    session.commit()
    session.expire_all()
    window = store.fitness_window(session, task)
    assert [p.id for p in window] == fitness[-5:]
    assert {p.pool for p in window} == {"fitness"}
    assert [p.id for p in store.gate_points(session, task)] == gate
    assert [p.id for p in store.gate_points(session, task, limit=2)] == gate[-2:]


def test_gate_point_ids_are_the_gate_sets_task_by_task(session):
    later, earlier = _task(session, "zeta", gate_share=0.5), _task(session, "alpha", gate_share=0.5)
    store.add_points(session, later, _points(20))
    store.add_points(session, earlier, _points(20, start=100))
    expected = [p.id for task in (earlier, later) for p in store.gate_points(session, task)]
    assert len(expected) > 2 and store.gate_point_ids(session) == expected


def test_duplicate_points_are_recognised(session):
    task = _task(session)
    first, _ = store.add_points(session, task, [{"inputs": {"a": 1, "b": 2}, "target": None}, *_points(2)])
    batch = [{"inputs": {"b": 2, "a": 1}, "target": None}, *_points(2), *_points(1, start=10), *_points(1, start=10)]
    added, duplicates = store.add_points(session, task, batch)
    assert [p.inputs for p in added] == [[10, 11]]
    assert [p.id for p in duplicates] == [p.id for p in first] + [added[0].id]
    session.commit()
    session.expire_all()
    stored = store.fitness_window(session, task) + store.gate_points(session, task)
    assert len(stored) == 4
    assert any(p.target is None and p.inputs == {"a": 1, "b": 2} for p in stored)  # JSON null round-trips
    other, _ = store.add_points(session, _task(session, "other"), _points(2))
    assert len(other) == 2  # the same content in another task is not a duplicate


def test_scores_are_written_once(session, specialist):
    a, b = specialist("math"), specialist("agent")
    stored, _ = store.add_points(session, _task(session), _points(3))
    ids = [p.id for p in stored]
    assert store.add_scores(session, a.id, {ids[0]: 1.0, ids[1]: 0.25}) == 2
    assert store.add_scores(session, a.id, {ids[0]: 0.0, ids[2]: 0.5}) == 1  # ids[0] keeps its first score
    assert store.add_scores(session, b.id, {ids[1]: 0}) == 1
    assert store.scores_for(session, [a.id, b.id], ids) == {
        (a.id, ids[0]): 1.0,
        (a.id, ids[1]): 0.25,
        (a.id, ids[2]): 0.5,
        (b.id, ids[1]): 0.0,
    }
    assert store.scores_for(session, [b.id], []) == {}
    with pytest.raises(InvalidInput, match=r"\[0, 1\]"):
        store.add_scores(session, b.id, {ids[0]: 1.5})
    with pytest.raises(NotFound, match="data points"):
        store.add_scores(session, b.id, {10**6: 0.5})


def test_scores_of_several_models_at_once(session, specialist):
    a, b = specialist("math"), specialist("agent")
    stored, _ = store.add_points(session, _task(session), _points(3))
    ids = [p.id for p in stored]
    assert store.add_scores(session, a.id, {ids[0]: 1.0}) == 1
    assert store.add_scores_of(session, {a.id: {ids[0]: 0.0, ids[1]: 0.5}, b.id: {ids[2]: 1}}) == 2
    assert store.add_scores_of(session, {}) == 0
    assert store.scores_for(session, [a.id, b.id], ids) == {
        (a.id, ids[0]): 1.0,  # kept: a score is never re-scored
        (a.id, ids[1]): 0.5,
        (b.id, ids[2]): 1.0,
    }
    with pytest.raises(InvalidInput, match="not a number"):
        store.add_scores_of(session, {a.id: {ids[2]: 0.5}, b.id: {ids[0]: "high"}})
    with pytest.raises(NotFound, match="no model with id 999"):
        store.add_scores_of(session, {999: {ids[0]: 0.5}})
    assert len(store.scores_for(session, [a.id, b.id], ids)) == 3  # nothing of a rejected call was stored


def test_archive_slots(session, specialist):
    space = ParamSpace([("w", (2,), torch.float32)])
    store.create_ecosystem(session, family="classifier", family_config={}, space=space, archive_size=3)
    a, b, c = specialist("a"), specialist("b"), specialist("c")
    store.set_slot(session, 0, a.id)
    store.set_slot(session, 2, b.id)
    assert {slot: m.name for slot, m in store.archive(session).items()} == {0: "a", 2: "b"}
    with pytest.raises(Conflict, match="already holds archive slot 0"):
        store.set_slot(session, 1, a.id)
    with pytest.raises(InvalidInput, match=r"slots 0\.\.2"):
        store.set_slot(session, 3, c.id)
    store.set_slot(session, 0, c.id)  # c evicts a
    store.set_slot(session, 2, None)
    store.set_slot(session, 1, a.id)
    assert {slot: m.name for slot, m in store.archive(session).items()} == {0: "c", 1: "a"}


def test_archive_slots_set_at_once(session, specialist):
    space = ParamSpace([("w", (2,), torch.float32)])
    store.create_ecosystem(session, family="classifier", family_config={}, space=space, archive_size=4)
    a, b, c, d = specialist("a"), specialist("b"), specialist("c"), specialist("d")
    store.set_slot(session, 0, a.id)
    store.set_slot(session, 1, b.id)
    store.set_slot(session, 2, c.id)
    store.set_slots(session, {0: b.id, 1: a.id, 3: d.id})  # a swap between given slots, and an empty slot filled
    store.set_slots(session, {})

    def names() -> dict[int, str]:
        return {slot: m.name for slot, m in store.archive(session).items()}

    assert names() == {0: "b", 1: "a", 2: "c", 3: "d"}
    with pytest.raises(Conflict, match="already holds archive slot 2"):
        store.set_slots(session, {0: c.id})
    with pytest.raises(Conflict, match="two archive slots"):
        store.set_slots(session, {0: d.id, 3: d.id})
    with pytest.raises(InvalidInput, match=r"slots 0\.\.3"):
        store.set_slots(session, {0: a.id, 4: b.id})
    with pytest.raises(NotFound, match="id 999"):
        store.set_slots(session, {0: 999})
    assert names() == {0: "b", 1: "a", 2: "c", 3: "d"}
    store.set_slot(session, 2, None)
    store.set_slots(session, {1: c.id, 2: a.id})
    assert names() == {0: "b", 1: "c", 2: "a", 3: "d"}


def test_champion_promotion_and_rollback_history(session, specialist):
    a, b, c = specialist("a"), specialist("b"), specialist("c")
    assert store.champion(session) is None and store.previous_champion(session) is None
    with pytest.raises(Conflict, match="no champion yet"):
        store.set_champion(session, a.id, "promote", actor="test")
    store.set_champion(session, a.id, "initial", actor="admin", reason="first registered model")
    store.set_champion(session, b.id, "promote", "evolver", "beat the champion", 0.5, 0.7, 0.01, 40)
    store.set_champion(session, c.id, "promote", "evolver", "beat the champion", 0.7, 0.8, 0.02, 40)
    assert (store.champion(session).model_id, store.champion(session).version) == (c.id, 3)
    with pytest.raises(Conflict, match="already the champion"):
        store.set_champion(session, c.id, "promote", actor="test")
    with pytest.raises(Conflict, match="returns to model 'b'"):
        store.set_champion(session, a.id, "rollback", actor="test")

    assert store.previous_champion(session).id == b.id
    store.set_champion(session, b.id, "rollback", actor="admin", reason="regression reported")
    assert store.previous_champion(session).id == a.id  # a second rollback undoes the promotion before
    store.set_champion(session, a.id, "rollback", actor="admin")
    assert store.previous_champion(session) is None
    session.commit()
    session.expire_all()

    current = store.champion(session)
    assert (current.model.name, current.version) == ("a", 5)
    history = store.champion_history(session)
    assert [(e.action, e.version, e.model_id, e.previous_model_id) for e in history] == [
        ("rollback", 5, a.id, b.id),
        ("rollback", 4, b.id, c.id),
        ("promote", 3, c.id, b.id),
        ("promote", 2, b.id, a.id),
        ("initial", 1, a.id, None),
    ]
    promote = history[3]
    assert (promote.champion_score, promote.challenger_score, promote.p_value, promote.n_points) == (0.5, 0.7, 0.01, 40)
    assert promote.actor == "evolver" and promote.created_at.tzinfo is not None
    assert len(store.champion_history(session, limit=2)) == 2
    with pytest.raises(Conflict, match="already set"):
        store.set_champion(session, b.id, "initial", actor="test")
    with pytest.raises(InvalidInput, match="action 'demote'"):
        store.set_champion(session, b.id, "demote", actor="test")


def test_generator_state_round_trip_restores_the_random_stream(session):
    assert store.load_evolution_state(session) is None
    generator = torch.Generator().manual_seed(1234)
    torch.rand(10, generator=generator)
    store.save_evolution_state(session, 10, generator.get_state().numpy().tobytes())
    expected = torch.rand(5, generator=generator)
    session.commit()
    session.expire_all()

    state = store.load_evolution_state(session)
    restored = torch.Generator()
    restored.set_state(torch.frombuffer(bytearray(state.generator_state), dtype=torch.uint8))
    assert state.steps == 10
    assert torch.equal(torch.rand(5, generator=restored), expected)
    store.save_evolution_state(session, 15, restored.get_state().numpy().tobytes())
    assert store.load_evolution_state(session).steps == 15  # one row, updated in place
