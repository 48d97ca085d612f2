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

    def state_dict(self, model: Model) -> dict[str, torch.Tensor]:
        """A stored model's weights, read from its safetensors artifact."""
        with SafetensorsSource(self.artifacts.path_for(model.sha256)) as source:
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if migrate:
        upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings.database_url))
    return Runtime(settings, sessions, ArtifactStore(settings.data_dir))
