"""The throttle's counters: exact under concurrency, one row per window, IPv6 by /64."""

import threading

import pytest
from django.db import connection

from backend.throttle import services
from backend.throttle.models import ThrottleCounter
from backend.throttle.services import Rate, client_group, throttle_hit

NOW = 1_800_000_010.0  # 10 s into a minute


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:0:7::1", "2001:db8:0:7::/64"),
        ("2001:db8:0:7:ffff:1:2:3", "2001:db8:0:7::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_clients_are_counted_by_ipv4_address_or_ipv6_64(address, group):
    assert client_group(address) == group


@pytest.mark.parametrize(
    ("text", "rate"), [("20/min", Rate(20, 60)), ("5/s", Rate(5, 1)), ("100/hour", Rate(100, 3600))]
)
def test_rates_are_read_from_the_setting_format(text, rate):
    assert Rate.parse(text) == rate


@pytest.mark.django_db
def test_a_client_over_the_limit_waits_for_the_next_window():
    rate = Rate(limit=2, period_seconds=60)
    decisions = [throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW) for _ in range(3)]

    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after_seconds == 50
    assert throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW + 50).allowed


@pytest.mark.django_db
def test_many_clients_never_reset_each_others_counters():
    # Django's database cache culled a third of its 300 entries when full.
    rate = Rate(limit=1, period_seconds=60)
    throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW)
    for i in range(400):
        throttle_hit(scope="t", client=f"10.0.{i // 256}.{i % 256}", rate=rate, now=NOW)

    assert not throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW).allowed


@pytest.mark.django_db
def test_expired_windows_are_deleted(monkeypatch):
    monkeypatch.setattr(services, "_last_purge", 0.0)
    rate = Rate(limit=5, period_seconds=60)
    throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW)
    throttle_hit(scope="t", client="203.0.113.8", rate=rate, now=NOW + 3600)

    assert [row.bucket.split(":")[1] for row in ThrottleCounter.objects.all()] == ["203.0.113.8"]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_from_one_client_are_counted_exactly():
    # 60 requests at once from one client, limit 20: exactly 20 pass. Each
    # thread has its own database connection, as each gunicorn worker does.
    rate = Rate(limit=20, period_seconds=60)
    start = threading.Barrier(60)
    allowed: list[bool] = []
    lock = threading.Lock()

    def one_request() -> None:
        try:
            start.wait(timeout=30)
            decision = throttle_hit(scope="t", client="203.0.113.7", rate=rate, now=NOW)
            with lock:
                allowed.append(decision.allowed)
        finally:
            connection.close()

    threads = [threading.Thread(target=one_request) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(allowed) == 60
    assert allowed.count(True) == 20
    assert ThrottleCounter.objects.get().count == 60
