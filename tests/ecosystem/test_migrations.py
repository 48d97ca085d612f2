"""Alembic migrations: head creates exactly the ORM's schema, and upgrading never loses rows."""

import torch
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from ecosystem import store
from ecosystem.db import alembic_config, make_engine, make_sessionmaker, migration_connection, upgrade
from ecosystem.orm import Base
from m2n2.space import ParamSpace


def test_head_matches_the_orm(fresh_url):
    upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, Base.metadata) == []
            head = ScriptDirectory.from_config(alembic_config()).get_current_head()
            assert context.get_current_revision() == head
    finally:
        engine.dispose()


def test_upgrade_keeps_rows(fresh_url):
    upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with make_sessionmaker(engine).begin() as session:
            space = ParamSpace([("w", (2,), torch.float32)])
            store.create_ecosystem(session, family="classifier", family_config={}, space=space, archive_size=2)
            model = store.add_model(session, name="math", sha256="a" * 64, n_bytes=8)
            task = store.create_task(session, name="digits", scoring="accuracy")
            store.add_points(session, task, [{"inputs": [1, 2], "target": 3}])
            store.set_champion(session, model.id, "initial", actor="test")
        upgrade(fresh_url)  # already at head: a no-op that must not touch the data
        with make_sessionmaker(engine)() as session:
            assert store.get_ecosystem(session).family == "classifier"
            assert store.champion(session).model.name == "math"
            assert store.count_points(session, store.get_task(session, "digits")) == {"fitness": 1, "gate": 0}
    finally:
        engine.dispose()


def test_downgrade_to_base_and_back(fresh_url):
    upgrade(fresh_url)
    engine = make_engine(fresh_url)
    try:
        with migration_connection(engine) as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        with engine.connect() as connection:
            assert set(inspect(connection).get_table_names()) == {"alembic_version"}
        upgrade(fresh_url)
        with engine.connect() as connection:
            assert set(Base.metadata.tables) <= set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
