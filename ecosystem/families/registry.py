"""The model families, by name: an explicit dict filled by ``@register_family``."""

from typing import TypeVar

from ecosystem.errors import InvalidInput
from ecosystem.families.base import Family

F = TypeVar("F", bound=type)

FAMILIES: dict[str, Family] = {}


class UnknownFamily(InvalidInput, ValueError):
    """A family name that is not registered (a ValueError too, like a bad config field)."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"unknown model family {name!r}; available: {', '.join(sorted(available))}")
        self.name = name
        self.available = available


def register_family(cls: F) -> F:
    """Class decorator: register one instance of a family under ``cls.name``; duplicates raise."""
    name = cls.name
    if name in FAMILIES:
        raise ValueError(f"model family {name!r} is already registered (by {type(FAMILIES[name]).__qualname__})")
    FAMILIES[name] = cls()
    return cls


def get_family(name: str) -> Family:
    """The registered family called ``name``; ``UnknownFamily`` lists the available ones."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise UnknownFamily(name, list(FAMILIES)) from None


# Every built-in family, imported explicitly so none exists only by import side effect.
# These imports sit below the decorator because each family module uses it.
from ecosystem.families import causal_lm, classifier, diffusion  # noqa: E402, F401
