"""A backup taken while the evolver runs restores to an ecosystem with every row and hash intact, that evolves."""

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hf_models import tiny_llama
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from ecosystem import backup, demo, setup, store
from ecosystem.cli import main
from ecosystem.db import make_engine
from ecosystem.errors import Conflict
from ecosystem.evolver import Evolver
from ecosystem.orm import Base
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import EvolutionSettings, Settings, StoreSettings


def row_counts(runtime: Runtime) -> dict[str, int]:
    with runtime.sessions() as session:
        return {t.name: session.scalar(select(func.count()).select_from(t)) for t in Base.metadata.sorted_tables}


def backup_while_evolving(live: Runtime, target: Path) -> backup.BackupReport:
    """Start evolving the digits demo in a thread, back up once it has run 50 steps, then stop it."""
    demo.init_digits(live)
    evolver, stop = Evolver(live), threading.Event()

    def evolve() -> None:
        while not stop.is_set():
            evolver.tick(steps=50)

    worker = threading.Thread(target=evolve)
    worker.start()
    try:
        evolver_ran = threading.Event()
        while not evolver_ran.wait(0.2):
            with live.sessions() as session:
                state = store.load_evolution_state(session)
                if state is not None and state.steps >= 50:
                    evolver_ran.set()
        return backup.backup(live, target)
    finally:
        stop.set()
        worker.join()
        live.close()


def serves_and_evolves(restored: Runtime) -> None:
    """Every member's and the champion's weights verify; the champion answers; a tick runs."""
    with restored.sessions() as session:
        members = store.archive(session).values()
        champion = store.get_model(session, store.champion(session).model_id)
        for model in [*members, champion]:
            assert restored.artifacts.verify(model.sha256), model.name
        family, config, _ = restored.family(session)
    module = family.build(config, restored.source(champion))
    assert family.predict(module, config, family.smoke_inputs(config))  # it serves
    assert Evolver(restored).tick(steps=20).steps == 20  # and evolves


def test_backup_during_evolution_restores_intact_and_evolves(tmp_path: Path, settings_env) -> None:
    live = open_runtime(Settings(data_dir=tmp_path / "live", evolution=EvolutionSettings(archive_size=6)))
    taken = backup_while_evolving(live, tmp_path / "backup")

    restored_settings = Settings(data_dir=tmp_path / "restored")
    report = backup.restore(restored_settings, tmp_path / "backup")
    assert (report.models, report.weights_files) == (taken.models, taken.weights_files)
    restored = open_runtime(restored_settings)
    snapshot = open_runtime(Settings(data_dir=tmp_path / "backup"), migrate=False)  # the backup's own database
    try:
        assert row_counts(restored) == row_counts(snapshot)
        serves_and_evolves(restored)
    finally:
        restored.close()
        snapshot.close()


def test_restore_needs_an_empty_directory_and_a_backup(tmp_path: Path, settings_env, capsys) -> None:
    live = open_runtime(Settings(data_dir=tmp_path / "live"))
    demo.init_digits(live)
    live.close()
    d = ("--data-dir", str(tmp_path / "live"))
    assert main(["backup", str(tmp_path / "backup"), *d]) == 0
    assert "backed up 2 models and 2 weights files" in capsys.readouterr().out
    assert main(["restore", str(tmp_path / "backup"), *d]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "nothing"), "--data-dir", str(tmp_path / "new")]) == 2
    assert "not a backup made by `m2n2 backup`" in capsys.readouterr().err
    again = open_runtime(Settings(data_dir=tmp_path / "live"))
    with pytest.raises(Conflict, match="not empty"):
        backup.backup(again, tmp_path / "backup")
    again.close()


def test_a_restored_language_ecosystem_reads_its_own_base_files(tmp_path: Path, settings_env) -> None:
    live = open_runtime(Settings(data_dir=tmp_path / "live"))
    setup.create(live, "causal-lm", {"base": str(tiny_llama(tmp_path / "base"))})
    backup.backup(live, tmp_path / "backup")
    live.close()
    shutil.rmtree(tmp_path / "live")  # the old data directory is gone
    backup.restore(Settings(data_dir=tmp_path / "restored"), tmp_path / "backup")
    restored = open_runtime(Settings(data_dir=tmp_path / "restored"))
    with restored.sessions() as session:
        family, config, space = restored.family(session)
    restored.close()
    assert Path(config["base_dir"]).parent == tmp_path / "restored"
    assert len(space) > 0 and family.count_tokens(config, "hello") > 0


@pytest.fixture
def postgres_databases() -> Iterator[tuple[str, str]]:
    """Two new, empty PostgreSQL databases (the live one and the restore target), dropped afterwards."""
    base = os.environ.get(POSTGRES_ENV := "M2N2_TEST_POSTGRES_URL")  # set by `make test` (tests/ecosystem/conftest.py)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (`make test` sets it when scripts/postgres.sh can start PostgreSQL)")
    if shutil.which("pg_dump") is None or shutil.which("pg_restore") is None:
        pytest.skip("the PostgreSQL client tools (pg_dump, pg_restore) are not installed")
    names = [f"m2n2_backup_{uuid.uuid4().hex[:10]}_{role}" for role in ("live", "restored")]
    admin = make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        for name in names:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        urls = [make_url(base).set(database=name).render_as_string(hide_password=False) for name in names]
        yield urls[0], urls[1]
    finally:
        with admin.connect() as connection:
            for name in names:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_a_postgresql_ecosystem_is_backed_up_with_pg_dump_during_evolution(
    tmp_path: Path, settings_env, postgres_databases: tuple[str, str]
) -> None:
    live_url, restored_url = postgres_databases
    live_settings = Settings(data_dir=tmp_path / "live", store=StoreSettings(url=live_url))
    taken = backup_while_evolving(open_runtime(live_settings), tmp_path / "backup")
    assert (tmp_path / "backup" / backup.PG_DUMP).is_file()

    restored_settings = Settings(data_dir=tmp_path / "restored", store=StoreSettings(url=restored_url))
    report = backup.restore(restored_settings, tmp_path / "backup")
    assert (report.models, report.weights_files) == (taken.models, taken.weights_files)
    restored = open_runtime(restored_settings)
    try:
        counts = row_counts(restored)
        assert counts["models"] == taken.models and counts["scores"] > 0 and counts["data_points"] > 0
        serves_and_evolves(restored)
    finally:
        restored.close()
