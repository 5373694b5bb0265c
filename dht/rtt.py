"""Round-trip time estimation (Jacobson/Karels) and the call timeouts derived from it.

A lookup uses two: a soft timeout after which a call no longer holds a lookup slot, and a hard
timeout after which it counts as failed. Both sit between a floor and a ceiling.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class RttEstimator:
    floor: float = 0.25
    ceiling: float = 2.0
    soft_floor: float = 0.03
    initial: float = 1.0
    srtt: float | None = None
    rttvar: float = 0.0
    backoff: float = 1.0  # doubles on each timeout, reset by an answer (Karn)

    def timed_out(self) -> None:
        self.backoff = min(8.0, self.backoff * 2)

    def observe(self, sample: float) -> None:
        self.backoff = 1.0
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
        self.srtt = 0.875 * self.srtt + 0.125 * sample

    def hard_timeout(self) -> float:
        base = self.initial if self.srtt is None else 2 * self.srtt + 4 * self.rttvar
        return min(self.ceiling, max(self.floor, base) * self.backoff)

    def soft_timeout(self) -> float:
        if self.srtt is None:
            return self.hard_timeout() / 4
        soft = max(self.soft_floor, 1.5 * self.srtt + 2 * self.rttvar) * self.backoff
        return min(soft, self.hard_timeout())
