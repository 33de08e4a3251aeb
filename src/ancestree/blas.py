"""One BLAS thread for small linear algebra.

On small matrices (sketches, a few dozen models) BLAS threads cost more than they save, and on a shared
machine they spin: a 512 x 23 least-squares solve takes ~0.3 ms on one thread and ~1-15 ms with two busy
ones. The thread-pool controller is built once per process (scanning the loaded libraries takes ~6 ms).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

_LOCK = threading.Lock()
_CONTROLLER: ThreadpoolController | None = None
_HELD = threading.Lock()
_DEPTH = 0  # contexts open now, in any thread: the limit is process-wide, so it is set by the first, undone by the last
_LIMITER = None


def controller() -> ThreadpoolController:
    """The process's thread-pool controller (built on first use)."""
    global _CONTROLLER
    with _LOCK:
        if _CONTROLLER is None:
            _CONTROLLER = ThreadpoolController()
        return _CONTROLLER


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """A context in which BLAS (OpenBLAS, MKL, ...) runs on the calling thread only.

    The limit is the process's (BLAS has one thread pool), so overlapping contexts (threads calling
    ancestree at once) share one: each restoring the limits it saw on entry would leave the process at one
    thread when the first finished before the second."""
    global _DEPTH, _LIMITER
    with _HELD:
        if _DEPTH == 0:
            _LIMITER = controller().limit(limits=1, user_api="blas")
        _DEPTH += 1
    try:
        yield
    finally:
        with _HELD:
            _DEPTH -= 1
            if _DEPTH == 0 and _LIMITER is not None:
                _LIMITER.restore_original_limits()
                _LIMITER = None
