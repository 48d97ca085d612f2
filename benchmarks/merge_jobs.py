"""The merges ``benchmarks.merge`` times, each run by this library straight from files to a file.

    python -m benchmarks.merge_jobs slerp OUT A B            # per-tensor angle, as mergekit's slerp
    python -m benchmarks.merge_jobs crossover OUT A B        # M2N2's global angle (split point at the end)
    python -m benchmarks.merge_jobs ties OUT BASE A B

Each job streams: one tensor of each input at a time, the output hashed and written by a second
thread while the next tensor is computed, fsynced at the end, as the library always writes.
Only torch and ``m2n2`` are imported, as in a user's script, so a process's time and peak RSS
are the merge's.
"""

import argparse
from pathlib import Path

from m2n2.checkpoint import SafetensorsSource, write_safetensors
from m2n2.crossover import global_cosine, split_slerp_tensors
from m2n2.merge import merge

SLERP_T = 0.3  # asymmetric, so swapping the endpoints would show
TIES_DENSITY = 0.5  # density * numel is an integer for every tensor: no floor-or-round disagreement


def slerp(out: Path, a: Path, b: Path, t: float = SLERP_T) -> Path:
    """SLERP from ``a`` (t = 0) to ``b`` (t = 1) with one angle per tensor."""
    merge([SafetensorsSource(a), SafetensorsSource(b)], "slerp", out=out, t=t)
    return out


def crossover(out: Path, a: Path, b: Path, t: float = SLERP_T) -> Path:
    """SLERP with one angle between the whole models: M2N2's crossover with its split point past the end."""
    sa, sb = SafetensorsSource(a), SafetensorsSource(b)
    cos = global_cosine(sa, sb, sa.space)
    write_safetensors(out, sa.space, split_slerp_tensors(sa, sb, sa.space, t, sa.space.dim, cos), {"format": "pt"})
    return out


def ties(out: Path, base: Path, a: Path, b: Path, density: float = TIES_DENSITY) -> Path:
    """TIES of ``a`` and ``b`` over ``base``, both task vectors weighted 1, the disjoint mean normalised."""
    merge([SafetensorsSource(a), SafetensorsSource(b)], "ties", base=SafetensorsSource(base), out=out, density=density)
    return out


JOBS = {"slerp": slerp, "crossover": crossover, "ties": ties}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", choices=sorted(JOBS))
    parser.add_argument("out", type=Path)
    parser.add_argument("inputs", type=Path, nargs="+", help="safetensors files: A B, or BASE A B for ties")
    args = parser.parse_args()
    JOBS[args.job](args.out, *args.inputs)


if __name__ == "__main__":
    main()
