"""Crash points for fault-injection tests: SIGKILL the armed process at the n-th pass of a named point.

Inert unless `arm` was called (the server arms it from RAGSVC_TEST_CRASH_AT, a test-only setting). Points in
the ingest pipeline: `parse` (before a file is parsed), `embed` (before a batch is embedded), `replace`
(after a document's new chunks are written, before its old ones are dropped).
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger("ragsvc.faults")

POINTS = ("parse", "embed", "replace")


class _Armed:
    def __init__(self, point: str, nth: int) -> None:
        self.point, self.nth, self.passes = point, nth, 0
        self.pid = os.getpid()  # the process to kill, also when a point is passed in a helper process
        self.lock = threading.Lock()


_armed: _Armed | None = None


def arm(spec: str | None) -> None:
    """Arm 'point:n' (or disarm with None). A test-only fault: nothing in production sets it."""
    global _armed
    if not spec:
        _armed = None
        return
    point, _, nth = spec.partition(":")
    if point not in POINTS or not nth.isdigit() or int(nth) < 1:
        raise ValueError(f"crash point must be one of {', '.join(POINTS)} with ':n' (n >= 1), not {spec!r}")
    _armed = _Armed(point, int(nth))
    log.warning("crash point armed: this process is SIGKILLed at pass %s of %r", nth, point)


def crash_point(point: str) -> None:
    """Die here, without cleanup, if this is the armed pass of the armed point; else do nothing."""
    armed = _armed
    if armed is None or armed.point != point:
        return
    with armed.lock:
        armed.passes += 1
        if armed.passes == armed.nth:
            os.kill(armed.pid, signal.SIGKILL)
