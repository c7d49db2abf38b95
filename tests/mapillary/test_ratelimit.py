import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s2r_data.mapillary.ratelimit import TokenBucket, max_rate_ratio


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    async def sleep(self, d):
        self.t += max(0.0, d)
        await asyncio.sleep(0)


def _run_bucket(rate, burst, n, jitter=False, arrivals=None):
    clock = FakeClock()
    b = TokenBucket(rate, burst, jitter=jitter, rng=random.Random(1), clock=clock, sleep=clock.sleep)
    sent = []

    async def main():
        for i in range(n):
            if arrivals is not None:
                clock.t = max(clock.t, arrivals[i])
            await b.acquire()
            sent.append(clock.t)

    asyncio.run(main())
    return sent


@settings(max_examples=30, deadline=None)
@given(
    rate=st.floats(0.5, 200),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 0.5), min_size=5, max_size=80),
    jitter=st.booleans(),
)
def test_sends_conform_to_the_bucket(rate, burst, gaps, jitter):
    arrivals = [sum(gaps[: i + 1]) for i in range(len(gaps))]
    sent = _run_bucket(rate, burst, len(gaps), jitter=jitter, arrivals=arrivals)
    assert max_rate_ratio(sent, rate, burst) <= 1.0 + 1e-9
    assert all(s >= a - 1e-12 for s, a in zip(sent, arrivals))  # never earlier than asked


def test_long_run_rate_and_burst():
    sent = _run_bucket(10.0, 5, 105)
    assert sent[4] == 0.0 and sent[5] > 0.0  # the burst goes out at once, then pacing
    assert (sent[-1] - sent[0]) == pytest.approx(10.0, rel=0.01)  # 100 more at 10/s


def test_jitter_only_slows_down():
    plain = _run_bucket(5.0, 1, 50)
    jit = _run_bucket(5.0, 1, 50, jitter=True)
    assert jit[-1] > plain[-1]
    gaps = [b - a for a, b in zip(jit, jit[1:])]
    assert min(gaps) >= 0.2 - 1e-9 and len({round(g, 6) for g in gaps}) > 10  # irregular, never faster


def test_max_rate_ratio_known_values():
    assert max_rate_ratio([], 1.0, 1) == 0.0
    assert max_rate_ratio([0, 1, 2, 3], 1.0, 1) == pytest.approx(1.0)
    assert max_rate_ratio([0, 0.5], 1.0, 1) == pytest.approx(2 / 1.5)
    assert max_rate_ratio([0, 0, 0], 1.0, 3) == pytest.approx(1.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="rate_per_s"):
        TokenBucket(0, 1)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1, 0)
