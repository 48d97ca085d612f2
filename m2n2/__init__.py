"""M2N2: Model Merging of Natural Niches (Sakana AI, arXiv 2508.16204) as a small library."""

from m2n2.archive import Archive
from m2n2.checkpoint import SafetensorsSource, StateDictSource, read_header, write_safetensors
from m2n2.competition import attraction, fitness, point_weights, sample_index, shared_fitness_matrix
from m2n2.crossover import slerp_weights, split_slerp, split_slerp_tensors
from m2n2.errors import (
    DuplicateMergeMethod,
    IncompatibleModels,
    InvalidCheckpoint,
    InvalidMergeParameter,
    InvalidScores,
    M2N2Error,
    ShapeMismatch,
    UnknownMergeMethod,
)
from m2n2.evolution import M2N2, VARIANTS, EvolutionConfig, StepResult
from m2n2.genomes import FlatGenomes, LazyGenomes
from m2n2.merge import merge
from m2n2.methods import available_methods, get_method
from m2n2.space import ParamSpace, TensorSpec

__all__ = [
    "M2N2",
    "VARIANTS",
    "Archive",
    "DuplicateMergeMethod",
    "EvolutionConfig",
    "FlatGenomes",
    "IncompatibleModels",
    "InvalidCheckpoint",
    "InvalidMergeParameter",
    "InvalidScores",
    "LazyGenomes",
    "M2N2Error",
    "ParamSpace",
    "SafetensorsSource",
    "ShapeMismatch",
    "StateDictSource",
    "StepResult",
    "TensorSpec",
    "UnknownMergeMethod",
    "attraction",
    "available_methods",
    "fitness",
    "get_method",
    "merge",
    "point_weights",
    "read_header",
    "sample_index",
    "shared_fitness_matrix",
    "slerp_weights",
    "split_slerp",
    "split_slerp_tensors",
    "write_safetensors",
]
