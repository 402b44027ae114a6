"""The backoff of a paused partition and the retry budget, without Kafka."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dramatiq_kafka.retry_policy import RetryPolicy, backoff_ms


@given(st.integers(1, 10_000), st.integers(0, 10_000), st.integers(0, 10**7))
def test_backoff_doubles_until_the_cap(failures: int, low: int, cap: int) -> None:
    wait = backoff_ms(failures, low, cap)
    assert wait <= cap
    assert wait == min(cap, low * 2 ** (failures - 1))
    assert backoff_ms(failures + 1, low, cap) >= wait


def test_the_default_policy_retries_three_times() -> None:
    policy = RetryPolicy()
    error = RuntimeError()
    assert [policy.should_retry(n, error) for n in (1, 2, 3, 4)] == [True, True, True, False]
    assert [policy.backoff(n) for n in (1, 2, 3, 7, 8)] == [1000, 2000, 4000, 60000, 60000]


def test_retry_when_decides_instead_of_max_retries() -> None:
    # As in Dramatiq, retry_when gets the retries made before this failure.
    policy = RetryPolicy(max_retries=0, retry_when=lambda n, e: isinstance(e, KeyError) and n < 5)
    assert policy.should_retry(5, KeyError())
    assert not policy.should_retry(6, KeyError())
    assert not policy.should_retry(1, ValueError())


def test_no_max_retries_retries_forever() -> None:
    assert RetryPolicy(max_retries=None).should_retry(10**6, RuntimeError())
