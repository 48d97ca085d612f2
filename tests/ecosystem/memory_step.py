"""One lazy evolution step's extra peak RSS, measured in a fresh process (run by ``test_memory_bound``).

Usage: ``python tests/ecosystem/memory_step.py DATA_DIR``; prints one JSON object with byte counts.
A warm-up tick first scores the archive and loads every library, then the peak RSS is reset
(``/proc/self/clear_refs``) and one more tick runs: what it adds is the cost of evolution itself.
"""

import gc
import json
import sys
from pathlib import Path

import torch

from ecosystem.evolver import Evolver
from ecosystem.runtime import open_runtime
from ecosystem.settings import Settings


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` memory field (reported in kB) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def main(data_dir: str) -> None:
    torch.set_num_threads(1)
    runtime = open_runtime(Settings(data_dir=data_dir))
    evolver = Evolver(runtime)
    evolver.tick(steps=1)
    gc.collect()
    before = status_bytes("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    report = evolver.tick(steps=2)
    peak = status_bytes("VmHWM")
    print(json.dumps({"before": before, "peak": peak, "steps": report.steps}))


if __name__ == "__main__":
    main(sys.argv[1])
