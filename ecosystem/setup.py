"""Creating an ecosystem: one family, its config and parameter space, in an empty store."""

from collections.abc import Mapping
from typing import Any

from ecosystem import store
from ecosystem.db import begin_write
from ecosystem.families import get_family
from ecosystem.orm import Ecosystem
from ecosystem.runtime import Runtime


def create(runtime: Runtime, family_name: str, options: Mapping[str, Any]) -> Ecosystem:
    """Create the ecosystem of ``family_name`` from ``m2n2 init`` options (e.g. ``{"base": DIR}``)."""
    family = get_family(family_name)
    config = family.create_config(options, runtime.settings.data_dir)
    space = family.space(config)
    settings = runtime.settings.evolution
    with runtime.sessions() as session:
        begin_write(session)
        ecosystem = store.create_ecosystem(
            session,
            family=family.name,
            family_config=config,
            space=space,
            archive_size=settings.archive_size,
            alpha=settings.alpha,
        )
        session.commit()
        return ecosystem
