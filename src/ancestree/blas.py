"""One BLAS thread for small linear algebra.

On small matrices (sketches, a few dozen models) BLAS threads cost more than they save, and on a shared
machine they spin: a 512 x 23 least-squares solve takes ~0.3 ms on one thread and ~1-15 ms with two busy
ones. The thread-pool controller is built once per process (scanning the loaded libraries takes ~6 ms).
"""

from __future__ import annotations

import threading
from contextlib import AbstractContextManager

from threadpoolctl import ThreadpoolController

_LOCK = threading.Lock()
_CONTROLLER: ThreadpoolController | None = None


def controller() -> ThreadpoolController:
    """The process's thread-pool controller (built on first use)."""
    global _CONTROLLER
    with _LOCK:
        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER


def one_blas_thread() -> AbstractContextManager:
    """A context in which BLAS (OpenBLAS, MKL, ...) runs on the calling thread only."""
    return controller().limit(limits=1, user_api="blas")
