"""Leases on the trials the study service hands out: a trial whose client sends no heartbeat or
tell within `lease_s` has a dead client. Pure bookkeeping on a clock; the service decides what
an expired trial becomes (failed, or asked again)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

EXPIRIES = ("fail", "requeue")


class Leases:
    """`grant(trial)` starts or renews its lease, `release(trial)` ends it, `expired()`
    takes the trials whose lease ran out (each once). Thread-safe."""

    def __init__(self, lease_s: float, *, clock: Callable[[], float] = time.monotonic):
        if not lease_s > 0:
            raise ValueError(f"lease_s must be above 0 seconds, got {lease_s}")
        self.lease_s, self.clock = lease_s, clock
        self.until: dict[str, float] = {}
        self.lock = threading.Lock()

    def grant(self, trial: str) -> float:
        """The lease's seconds (from now) after starting or renewing it."""
        with self.lock:
            self.until[trial] = self.clock() + self.lease_s
        return self.lease_s

    def release(self, trial: str) -> None:
        with self.lock:
            self.until.pop(trial, None)

    def expired(self) -> list[str]:
        now = self.clock()
        with self.lock:
            gone = [trial for trial, until in self.until.items() if until <= now]
            for trial in gone:
                del self.until[trial]
        return gone
