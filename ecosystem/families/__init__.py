"""Model families: how the ecosystem builds, runs and scores one architecture."""

from ecosystem.families.base import Family, FlatScoring
from ecosystem.families.registry import FAMILIES, UnknownFamily, get_family, register_family

__all__ = ["FAMILIES", "Family", "FlatScoring", "UnknownFamily", "get_family", "register_family"]
