"""One open ecosystem: settings, database sessions, artifact store and model family.

Built by a factory at start-up (``open_runtime``), never at import, so tests and the
CLI each open their own.
"""

from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy.orm import Session, sessionmaker

from ecosystem import store
from ecosystem.artifacts import ArtifactStore
from ecosystem.db import make_engine, make_sessionmaker, upgrade
from ecosystem.errors import NotFound
from ecosystem.families import Family, get_family
from ecosystem.orm import Model
from ecosystem.settings import Settings
from m2n2.checkpoint import SafetensorsSource, load_state_dict
from m2n2.space import ParamSpace


@dataclass
class Runtime:
    """Everything a command, the evolver or a service worker needs to reach the ecosystem."""

    settings: Settings
    sessions: sessionmaker[Session]
    artifacts: ArtifactStore

    def family(self, session: Session) -> tuple[Family, dict[str, Any], ParamSpace]:
        """The ecosystem's family adapter, its config and its parameter space."""
        eco = store.get_ecosystem(session)
        family = get_family(eco.family)
        return family, dict(eco.family_config), family.space(eco.family_config)

    def source(self, model: Model, mmap: bool = False) -> SafetensorsSource:
        """A stored model's weights as a lazy tensor source (``mmap``: shared, zero-copy pages, for serving).

        ``NotFound`` when its file is gone (an evicted child): ``ecosystem.weights.ensure`` rebuilds it.
        """
        path = self.artifacts.path_for(model.sha256)
        if not path.is_file():
            raise NotFound(f"model {model.name!r} has no stored weights (rebuild it with `m2n2 rebuild`)")
        return SafetensorsSource(path, mmap=mmap)

    def state_dict(self, model: Model) -> dict[str, torch.Tensor]:
        """A stored model's weights, read from its safetensors artifact (small models only)."""
        with self.source(model) as source:
            return load_state_dict(source)

    def close(self) -> None:
        """Close the database connections this runtime pooled."""
        self.sessions.kw["bind"].dispose()

    def flat(self, model: Model, space: ParamSpace) -> torch.Tensor:
        """A stored model's weights as one flat float32 vector (small models only)."""
        return space.flatten(self.state_dict(model))


def open_runtime(settings: Settings | None = None, migrate: bool = True) -> Runtime:
    """Open (and by default migrate) the store of ``settings.data_dir`` or ``settings.store.url``."""
    settings = settings or Settings()
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # weights, database and token: the owner's
    if migrate:
        upgrade(settings.database_url)
        if settings.sqlite_file is not None and settings.sqlite_file.is_file():
            settings.sqlite_file.chmod(0o600)  # SQLite gives its -wal and -shm files the database file's mode
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return Runtime(settings, sessions, ArtifactStore(settings.data_dir))
