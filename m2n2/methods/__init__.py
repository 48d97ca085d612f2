"""Classic merge methods (linear, SLERP, task arithmetic, TIES, DARE) to compare with M2N2."""

from m2n2.methods.registry import (
    DuplicateMergeMethod,
    InvalidMergeParameter,
    MergeMethod,
    available_methods,
    get_method,
    merge_method,
)

__all__ = [
    "DuplicateMergeMethod",
    "InvalidMergeParameter",
    "MergeMethod",
    "available_methods",
    "get_method",
    "merge_method",
]
