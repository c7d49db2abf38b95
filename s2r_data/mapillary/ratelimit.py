"""Token-bucket rate limiting for asyncio clients.

A request may go out when the bucket holds a token; tokens accrue at ``rate_per_s`` up to
``burst``. The bucket accounts with the *actual* send times, so the sequence of sends conforms
to (rate, burst): in every time window of length Δt at most ``burst + rate·Δt`` requests. Optional
jitter only ever adds delay (mean rate stays at or below ``rate_per_s``), giving the irregular
pacing recommended for ``tiles.mapillary.com``.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Awaitable, Callable, Sequence

import numpy as np

__all__ = ["TokenBucket", "max_rate_ratio"]


class TokenBucket:
    def __init__(
        self,
        rate_per_s: float,
        burst: int = 1,
        *,
        jitter: bool = False,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s={rate_per_s!r} must be > 0")
        if not isinstance(burst, int) or burst < 1:
            raise ValueError(f"burst={burst!r} must be an integer >= 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = burst
        self.jitter = jitter
        self._rng = rng or random.Random()
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(burst)
        self._last = clock()
        self._lock: asyncio.Lock | None = None
        self.n_acquired = 0
        self.waited_s = 0.0

    def _refill(self, now: float) -> None:
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    async def acquire(self) -> None:
        """Wait until one request may be sent (FIFO among waiters)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            t0 = self._clock()
            while True:
                self._refill(self._clock())
                if self._tokens >= 1.0:
                    break
                await self._sleep((1.0 - self._tokens) / self.rate_per_s + 1e-6)
            if self.jitter:
                # shifted exponential: mean extra gap a quarter of the nominal interval, capped
                interval = 1.0 / self.rate_per_s
                await self._sleep(min(self._rng.expovariate(4.0 / interval), 2.0 * interval))
                self._refill(self._clock())
            self._tokens -= 1.0
            self.n_acquired += 1
            self.waited_s += self._clock() - t0


def max_rate_ratio(times_s: Sequence[float], rate_per_s: float, burst: float) -> float:
    """Largest (requests in [t_j, t_i]) / (burst + rate·(t_i − t_j)) over all pairs j ≤ i.

    ≤ 1.0 exactly when the request times conform to a token bucket (rate, burst), i.e. a server
    enforcing that limit never refused one. 0.0 for no requests.
    """
    t = np.sort(np.asarray(times_s, dtype=np.float64))
    n = len(t)
    if n == 0:
        return 0.0
    best = 0.0
    idx = np.arange(n)
    for i0 in range(0, n, 512):  # chunk the O(n²) pair matrix
        ti = t[i0 : i0 + 512, None]
        ii = idx[i0 : i0 + 512, None]
        count = (ii - idx[None, :] + 1).astype(np.float64)
        denom = burst + rate_per_s * (ti - t[None, :])
        ratio = np.divide(count, denom, out=np.zeros_like(count), where=count > 0)
        best = max(best, float(ratio.max()))
    return best
