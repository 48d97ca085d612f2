"""Consistent backups of a running ecosystem, and restoring one into an empty data directory.

A backup is a directory: the database (SQLite through its online backup API, PostgreSQL through
``pg_dump``), the weights files the snapshot refers to, the family's files (``base/``) and a
manifest. It is taken under the store's write lock, which every writer (evolver ticks, weight
clean-ups, registrations, promotions) takes too, so the database and the files agree; weights are
hard-linked when the backup lies on the same file system (they are immutable), which keeps that
lock short, and copied otherwise.
"""

import json
import os
import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, update

from ecosystem import store
from ecosystem.db import begin_write
from ecosystem.errors import Conflict, InvalidInput
from ecosystem.orm import Ecosystem, Model
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings
from m2n2.checkpoint import sha256_file

MANIFEST = "manifest.json"
SQLITE_FILE, PG_DUMP = "ecosystem.db", "ecosystem.pgdump"
ARTIFACTS, FAMILY_FILES = "artifacts", "base"


@dataclass(frozen=True)
class BackupReport:
    """What a backup or a restore holds."""

    directory: Path
    models: int
    weights_files: int


def backup(runtime: Runtime, directory: str | os.PathLike) -> BackupReport:
    """Snapshot the store, the weights it refers to and the family's files into a new directory."""
    target = _empty_directory(Path(directory))
    root = runtime.settings.data_dir
    with runtime.sessions() as session:
        begin_write(session)  # no writer moves while the database and the files are copied
        if runtime.settings.sqlite_file is not None:
            _sqlite_backup(runtime.settings.sqlite_file, target / SQLITE_FILE)
        else:
            _pg_dump(runtime.settings.database_url, target / PG_DUMP)
        hashes = sorted(m.sha256 for m in store.list_models(session) if runtime.artifacts.exists(m.sha256))
        for sha256 in hashes:
            source = runtime.artifacts.path_for(sha256)
            _link_or_copy(source, target / source.relative_to(root))
        if (root / FAMILY_FILES).is_dir():
            shutil.copytree(root / FAMILY_FILES, target / FAMILY_FILES)
        n_models = len(store.list_models(session))
        session.rollback()
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "data_dir": str(root),
        "database": SQLITE_FILE if runtime.settings.sqlite_file is not None else PG_DUMP,
        "models": n_models,
        "weights": hashes,
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return BackupReport(target, n_models, len(hashes))


def restore(settings: Settings, directory: str | os.PathLike) -> BackupReport:
    """Bring a backup back into ``settings``' empty data directory (and empty database, for PostgreSQL)."""
    source = Path(directory)
    manifest = _manifest(source)
    root = settings.data_dir
    if root.exists() and any(root.iterdir()):
        raise Conflict(f"{root} is not empty; restore into a new or empty data directory")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if manifest["database"] == SQLITE_FILE:
        if settings.sqlite_file is None:
            raise InvalidInput("this backup holds a SQLite database; unset M2N2_STORE__URL to restore it")
        _sqlite_backup(source / SQLITE_FILE, settings.sqlite_file)
    else:
        _pg_restore(source / PG_DUMP, settings.database_url)
    for sha256 in manifest["weights"]:
        relative = Path(ARTIFACTS) / sha256[:2] / f"{sha256}.safetensors"
        _link_or_copy(source / relative, root / relative)
        if sha256_file(root / relative)[0] != sha256:
            raise Conflict(f"the backup's weights file {relative} does not match its hash; the backup is damaged")
    if (source / FAMILY_FILES).is_dir():
        shutil.copytree(source / FAMILY_FILES, root / FAMILY_FILES)
    runtime = open_runtime(settings)  # migrates a backup taken by an older version
    try:
        _move_family_files(runtime, Path(manifest["data_dir"]))
        with runtime.sessions() as session:
            n_models = len(session.scalars(select(Model.id)).all())
    finally:
        runtime.close()
    return BackupReport(root, n_models, len(manifest["weights"]))


def _move_family_files(runtime: Runtime, old_root: Path) -> None:
    """Point the family config's absolute paths under the old data directory at the new one."""
    new_root = runtime.settings.data_dir
    with runtime.sessions() as session:
        begin_write(session)
        config = dict(store.get_ecosystem(session).family_config)
        moved = {
            key: str(new_root / Path(value).relative_to(old_root))
            for key, value in config.items()
            if isinstance(value, str) and Path(value).is_absolute() and Path(value).is_relative_to(old_root)
        }
        if moved:
            session.execute(update(Ecosystem).values(family_config={**config, **moved}))
        session.commit()


def _manifest(source: Path) -> dict:
    try:
        return json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError):
        raise InvalidInput(f"{source} holds no readable {MANIFEST}: not a backup made by `m2n2 backup`") from None


def _empty_directory(path: Path) -> Path:
    if path.exists() and any(path.iterdir()):
        raise Conflict(f"{path} is not empty; back up into a new or empty directory")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def _sqlite_backup(source: Path, target: Path) -> None:
    """SQLite's online backup: a consistent copy even while other connections write."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    target.chmod(0o600)


def _pg_dump(url: str, target: Path) -> None:
    _run(["pg_dump", "--format=custom", "--no-owner", f"--file={target}", _libpq(url)], "pg_dump")


def _pg_restore(dump: Path, url: str) -> None:
    _run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={_libpq(url)}", str(dump)], "pg_restore")


def _libpq(url: str) -> str:
    """A SQLAlchemy URL as libpq reads it (without the ``+driver`` part)."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _run(command: list[str], tool: str) -> None:
    if shutil.which(tool) is None:
        raise Conflict(f"{tool} is not installed: PostgreSQL backups need the PostgreSQL client tools")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise Conflict(
            f"{tool} failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}"
        )


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link an immutable file (instant, no extra space), or copy it across file systems."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
