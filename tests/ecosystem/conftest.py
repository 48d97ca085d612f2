"""Store fixtures: every store test runs on SQLite and, when ``M2N2_TEST_POSTGRES_URL`` is set, on PostgreSQL.

PostgreSQL tests work in a schema of their own (dropped afterwards), so a URL pointing at a shared database
loses nothing. ``make test`` starts a throwaway cluster with scripts/postgres.sh and sets the variable.
"""

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from ecosystem import demo, store
from ecosystem.db import make_engine, upgrade
from ecosystem.orm import Model
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings

POSTGRES_ENV = "M2N2_TEST_POSTGRES_URL"


def _postgres_base_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set (`make test` sets it when scripts/postgres.sh can start PostgreSQL)")
    return url


@pytest.fixture(scope="session")
def postgres_schemas() -> Iterator[list[str]]:
    """Schemas made by this session, dropped at its end."""
    made: list[str] = []
    yield made
    if made:
        engine = make_engine(_postgres_base_url())
        with engine.begin() as connection:
            for schema in made:
                connection.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


def _new_postgres_schema(made: list[str]) -> str:
    base = _postgres_base_url()
    schema = f"m2n2_test_{uuid.uuid4().hex[:12]}"
    engine = make_engine(base)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    made.append(schema)
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def postgres_store_url(postgres_schemas: list[str]) -> str:
    """A PostgreSQL schema migrated once per session; tests roll their changes back."""
    url = _new_postgres_schema(postgres_schemas)
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path, postgres_schemas: list[str]) -> str:
    """An empty, unmigrated database of each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ecosystem.db'}"
    return _new_postgres_schema(postgres_schemas)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path) -> str:
    """A database of each backend, migrated to head."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ecosystem.db'}"
        upgrade(url)
        return url
    return request.getfixturevalue("postgres_store_url")


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = make_engine(store_url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside a transaction that is rolled back after the test; its commits are savepoints."""
    with engine.connect() as connection:
        transaction = connection.begin()
        session = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


def sha(name: str) -> str:
    """A stand-in artifact hash for a model named ``name``."""
    return hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def specialist(session: Session) -> Callable[[str], Model]:
    """Record a specialist with made-up weights: ``specialist(name)``."""

    def make(name: str) -> Model:
        return store.add_model(session, name=name, sha256=sha(name), n_bytes=1000, registered_by="test")

    return make


@pytest.fixture
def child(session: Session) -> Callable[..., Model]:
    """Record a split-SLERP child: ``child(name, parent_a, parent_b, split_point=7, ratio=0.25)``."""

    def make(name: str, a: Model, b: Model | None, split_point: int = 7, ratio: float = 0.25) -> Model:
        return store.add_model(
            session,
            name=name,
            sha256=sha(name),
            n_bytes=1000,
            kind="child",
            operator="split_slerp",
            parent_a_id=a.id,
            parent_b_id=None if b is None else b.id,
            split_point=split_point,
            mixing_ratio=ratio,
        )

    return make


# --- demo ecosystems: the CLI, end-to-end and crash-safety tests ---------------------------------------------


def clear_settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every ``M2N2_*`` setting of the developer's shell, so tests see the documented defaults."""
    for key in list(os.environ):
        if key.startswith("M2N2_") and key != POSTGRES_ENV:
            monkeypatch.delenv(key)


def close(runtime: Runtime) -> None:
    """Close a runtime's database connections."""
    runtime.close()


@pytest.fixture(scope="session")
def demo_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits demo (two specialists, train/test feedback) built once per session; tests use copies."""
    path = tmp_path_factory.mktemp("demo-template")
    with pytest.MonkeyPatch.context() as monkeypatch:
        clear_settings_env(monkeypatch)
        runtime = open_runtime(Settings(data_dir=path))
        demo.init_digits(runtime)
        close(runtime)  # the last connection checkpoints the WAL: the directory is then safe to copy
    return path


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``M2N2_*`` variables but one torch thread for the evolver; set more with the returned monkeypatch."""
    clear_settings_env(monkeypatch)
    monkeypatch.setenv("M2N2_EVOLUTION__TORCH_THREADS", "1")
    return monkeypatch


@pytest.fixture
def demo_dir(demo_template: Path, tmp_path: Path, settings_env: pytest.MonkeyPatch) -> Path:
    """A private copy of the demo data directory."""
    path = tmp_path / "data"
    shutil.copytree(demo_template, path)
    return path
