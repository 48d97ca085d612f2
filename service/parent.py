"""Workers end with the ``bentoml serve`` process that started them.

BentoML starts each worker in a session of its own, so a ``kill -9`` of the server process
alone (a terminal, a supervisor or a container runtime may do that) would leave its workers
answering on the port, holding the evolver's lock and blocking a restart. Each worker asks
the kernel for SIGTERM when its parent dies (Linux's ``PR_SET_PDEATHSIG``), and so shuts down
as it would on a normal stop.
"""

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def exit_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent process dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("could not tie this worker to its parent: %s", os.strerror(ctypes.get_errno()))
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
