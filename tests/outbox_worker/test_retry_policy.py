"""The persisted retry schedule of a message-level temporary failure (retry.RetryPolicy.backoff)."""

from datetime import timedelta

import pytest

from outbox_worker.conf import outbox_settings
from outbox_worker.models import OutboxStatus
from outbox_worker.outcomes import OutcomeBook
from outbox_worker.retry import RetryPolicy
from outbox_worker.transitions import Outcome


def policy(first_retry: float) -> RetryPolicy:
    return RetryPolicy(
        tries=4, first_retry=first_retry, wait_initial=0.1, wait_max=0.5, backoff_base=30, backoff_max=3600
    )


def seconds(policy: RetryPolicy, attempt: int) -> float:
    return policy.backoff(attempt).total_seconds()


@pytest.mark.parametrize(
    ("attempt", "nominal"),
    [(1, 1), (2, 30), (3, 60), (4, 120), (5, 240), (9, 3600), (40, 3600)],
)
def test_one_quick_retry_then_the_doubling_greylisting_schedule(attempt, nominal):
    # Jitter shortens each wait by at most a fifth and never lengthens it.
    assert all(0.8 * nominal <= seconds(policy(1), attempt) <= nominal for _ in range(50))


@pytest.mark.parametrize(("attempt", "nominal"), [(1, 30), (2, 60), (3, 120), (8, 3600)])
def test_first_retry_zero_goes_straight_to_the_backoff(attempt, nominal):
    assert all(0.8 * nominal <= seconds(policy(0), attempt) <= nominal for _ in range(50))


def test_the_default_budget_outlasts_greylisting_and_an_hour_of_temporary_refusals(settings):
    # postgrey's default delay is 300 s; a recipient's server down for an hour
    # must not fail our email either, even with every wait jittered to its shortest. The
    # library's defaults, not the test settings' shorter budget.
    for name in ("OUTBOX_MAX_ATTEMPTS", "OUTBOX_FIRST_RETRY", "OUTBOX_BACKOFF"):
        if hasattr(settings, name):
            delattr(settings, name)
    default = RetryPolicy.from_settings()
    shortest_reach = sum(
        0.8 * min(default.backoff_max, seconds_nominal)
        for seconds_nominal in [default.first_retry]
        + [default.backoff_base * 2**k for k in range(outbox_settings.MAX_ATTEMPTS - 2)]
    )
    assert shortest_reach > 3600


def test_an_idle_worker_remembers_each_retry_it_scheduled_not_only_the_soonest():
    # After the soonest comes due (and the claim takes it), the next one must
    # still wake the worker: forgetting it left the drain's tail to the poll interval.
    book = OutcomeBook(worker_id="w", finish_within=1.0)
    assert book.seconds_to_next_retry() == float("inf")
    book._written(
        [
            Outcome(1, OutboxStatus.PENDING, "451", timedelta(microseconds=1)),
            Outcome(2, OutboxStatus.PENDING, "451", timedelta(hours=1)),
            Outcome(3, OutboxStatus.SENT),
        ],
        lost=[],
    )
    assert book.seconds_to_next_retry() == 0.0
    assert 3500 < book.seconds_to_next_retry() <= 3600
