"""The floor of any merge to disk: read every input once, write one output of the first's size, fsync it.

    python -m benchmarks.read_write OUT INPUT...

Only the standard library is imported, so the process costs what the I/O costs: each input is read
in 16 MiB blocks into one reused buffer, and the first input's blocks are written to ``OUT``.
"""

import os
import sys
from pathlib import Path

BLOCK = 16 << 20


def read_write(out: Path, inputs: list[Path]) -> int:
    """Read all of ``inputs``, write a copy of the first to ``out`` and fsync it; bytes read."""
    files = [open(p, "rb", buffering=0) for p in inputs]  # noqa: SIM115 (closed below, all together)
    buffers = [bytearray(BLOCK) for _ in files]
    total = 0
    try:
        with open(out, "wb", buffering=0) as w:
            while True:
                sizes = [f.readinto(buf) for f, buf in zip(files, buffers, strict=True)]
                if not any(sizes):
                    break
                total += sum(sizes)
                if sizes[0]:
                    w.write(memoryview(buffers[0])[: sizes[0]])
            os.fsync(w.fileno())
    finally:
        for f in files:
            f.close()
    return total


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(f"usage: python -m benchmarks.read_write OUT INPUT...; got {sys.argv[1:]}")
    read_write(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]])
