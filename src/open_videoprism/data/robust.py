"""Counting, reporting and bounding bad samples.

A data job never crashes on one bad file: the file is skipped, its path and
reason are logged (rate-limited, so a broken dataset does not flood the log),
and counted. When the share of bad samples exceeds ``max_failure_ratio`` the
job stops with one :class:`~open_videoprism.errors.DataError` line saying how
many samples failed and why.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

from open_videoprism.errors import DataError

log = logging.getLogger("open_videoprism.data")

# Below this many attempts the ratio is too noisy to judge (checked anyway at
# the end of each pass).
MIN_ATTEMPTS_FOR_RATIO = 16


@dataclass
class Skip:
    """One skipped sample."""

    path: str
    reason: str
    detail: str = ""


@dataclass
class SkipTracker:
    """Counts attempts and failures by reason; enforces the failure ratio.

    ``log_every`` seconds bounds how often individual skips are logged (the
    first ``log_first`` are always logged).
    """

    max_failure_ratio: float = 0.1
    source: str = "dataset"
    log_first: int = 10
    log_every: float = 10.0
    attempts: int = 0
    failures: int = 0
    reasons: Counter = field(default_factory=Counter)
    _last_log: float = 0.0
    _suppressed: int = 0

    def record(self, attempts: int, skips: list[Skip]) -> None:
        """Account for a batch: ``attempts`` samples tried, ``skips`` of them bad."""
        self.attempts += attempts
        for s in skips:
            self.failures += 1
            self.reasons[s.reason] += 1
            now = time.monotonic()
            if self.failures <= self.log_first or now - self._last_log >= self.log_every:
                extra = f" (+{self._suppressed} more not shown)" if self._suppressed else ""
                log.warning("skipped %s: %s%s%s", s.path, s.reason, f" ({s.detail})" if s.detail else "", extra)
                self._last_log = now
                self._suppressed = 0
            else:
                self._suppressed += 1

    def check(self, final: bool = False) -> None:
        """Raise :class:`DataError` when the failure ratio is over the limit."""
        if not self.failures or (self.attempts < MIN_ATTEMPTS_FOR_RATIO and not final):
            return
        ratio = self.failures / max(1, self.attempts)
        if ratio > self.max_failure_ratio:
            reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common())
            raise DataError(
                f"{self.source}: {self.failures} of {self.attempts} samples failed to load "
                f"({ratio:.0%} > max_failure_ratio {self.max_failure_ratio:.0%}; {reasons}); "
                "run `videoprism check-data` on it to list the bad files"
            )

    def summary(self) -> str:
        """One line: ``loaded 97 of 100 samples; skipped 3 (missing: 2, corrupt: 1)``."""
        ok = self.attempts - self.failures
        if not self.failures:
            return f"{self.source}: loaded {ok} samples, none skipped"
        reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common())
        return f"{self.source}: loaded {ok} of {self.attempts} samples; skipped {self.failures} ({reasons})"

    def state(self) -> dict:
        return {"attempts": self.attempts, "failures": self.failures, "reasons": dict(self.reasons)}

    def load_state(self, d: dict) -> None:
        self.attempts = int(d.get("attempts", 0))
        self.failures = int(d.get("failures", 0))
        self.reasons = Counter({str(k): int(v) for k, v in d.get("reasons", {}).items()})
