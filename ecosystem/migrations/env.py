"""Alembic environment: migrates the connection ``ecosystem.db.upgrade`` hands over, else the Settings database."""

from alembic import context
from sqlalchemy import Connection

from ecosystem.db import make_engine, migration_connection
from ecosystem.orm import Base
from ecosystem.settings import Settings

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    """Configure the context on ``connection`` and run the pending migrations."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Run on the connection handed over, as a SQL script (offline), or on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    url = Settings().database_url  # M2N2_STORE__URL, or the data directory's SQLite file
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url)
    try:
        with migration_connection(engine) as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


main()
