"""Operator commands: outbox_status and outbox_prune; and the rate cap."""

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from outbox_worker.models import DeliveryAttempt, OutboxMessage, OutboxStatus, WorkerHeartbeat
from outbox_worker.throttle import RateLimiter
from tests.factories import enqueue_messages

pytestmark = pytest.mark.django_db


def age(message, **delta):
    OutboxMessage.objects.filter(pk=message.pk).update(updated_at=timezone.now() - timedelta(**delta))


def test_status_reports_counts_oldest_due_failures_and_workers(capsys):
    waiting, sent, failed = enqueue_messages(3)
    OutboxMessage.objects.filter(pk=waiting.pk).update(available_at=timezone.now() - timedelta(minutes=10))
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxStatus.FAILED)
    now = timezone.now()
    WorkerHeartbeat.objects.create(worker_id="web:1:a", hostname="web", pid=1, started_at=now, last_seen_at=now)
    WorkerHeartbeat.objects.create(
        worker_id="old:2:b", hostname="old", pid=2, started_at=now, last_seen_at=now - timedelta(hours=1)
    )

    call_command("outbox_status", "--json")

    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == {"pending": 1, "sending": 0, "sent": 1, "failed": 1, "cancelled": 0, "suppressed": 0}
    assert 590 < data["oldest_due_age_seconds"] < 3600
    assert data["failed_last_hour"] == 1
    assert [w["worker_id"] for w in data["workers"]] == ["web:1:a"]


def test_status_exits_2_when_the_oldest_due_message_is_too_old():
    [message] = enqueue_messages(1)
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now() - timedelta(minutes=10))

    call_command("outbox_status", "--max-age", "3600")  # fine: waited 10 minutes
    with pytest.raises(CommandError, match="esperou") as error:
        call_command("outbox_status", "--max-age", "300")
    assert error.value.returncode == 2


def test_prune_deletes_only_old_finished_messages_and_their_attempts(capsys):
    old_sent, old_failed, new_sent, old_pending = enqueue_messages(4)
    OutboxMessage.objects.filter(pk__in=[old_sent.pk, new_sent.pk]).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=old_failed.pk).update(status=OutboxStatus.FAILED)
    now = timezone.now()
    DeliveryAttempt.objects.create(
        message=old_sent, attempt=1, worker="w", started_at=now, finished_at=now, outcome="sent"
    )
    for message in (old_sent, old_failed, old_pending):
        age(message, days=40)

    call_command("outbox_prune", "--older-than", "30d", "--dry-run")
    assert "would delete 2 messages" in capsys.readouterr().out
    assert OutboxMessage.objects.count() == 4

    call_command("outbox_prune", "--older-than", "30d", "--batch-size", "1")

    assert "deleted 2 messages" in capsys.readouterr().out
    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {new_sent.pk, old_pending.pk}
    assert not DeliveryAttempt.objects.exists()


def test_prune_can_keep_failed_messages():
    sent, failed = enqueue_messages(2)
    OutboxMessage.objects.filter(pk=sent.pk).update(status=OutboxStatus.SENT)
    OutboxMessage.objects.filter(pk=failed.pk).update(status=OutboxStatus.FAILED)
    age(sent, days=2)
    age(failed, days=2)

    call_command("outbox_prune", "--older-than", "1d", "--status", "sent")

    assert list(OutboxMessage.objects.values_list("status", flat=True)) == [OutboxStatus.FAILED]


@pytest.mark.parametrize("argv", [["--older-than", "soon"], ["--older-than", "1d", "--status", "pending"]])
def test_prune_rejects_bad_arguments(argv):
    with pytest.raises(CommandError):
        call_command("outbox_prune", *argv)


def test_rate_limiter_spaces_sends_evenly():
    clock = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(4, sleep=sleep, clock=lambda: clock[0])
    for _ in range(5):
        limiter.acquire()

    assert sleeps == [0.25, 0.25, 0.25, 0.25]


def test_status_lists_the_workers_the_claim_considers_alive(capsys, settings):
    settings.OUTBOX_WORKER_STALE_AFTER = 20
    now = timezone.now()
    for worker_id, seconds_ago in (("live:1:a", 5), ("stale:2:b", 30)):
        WorkerHeartbeat.objects.create(
            worker_id=worker_id, hostname="h", pid=1, started_at=now, last_seen_at=now - timedelta(seconds=seconds_ago)
        )

    call_command("outbox_status", "--json")

    listed = [w["worker_id"] for w in json.loads(capsys.readouterr().out)["workers"]]
    assert listed == list(WorkerHeartbeat.objects.alive().values_list("worker_id", flat=True)) == ["live:1:a"]


def test_status_lists_stopped_and_dead_workers_with_when_they_were_last_seen(capsys, settings):
    settings.OUTBOX_WORKER_STALE_AFTER = 20
    now = timezone.now()
    beats = {
        "live:1:a": (now - timedelta(seconds=5), None),
        "stopped:2:b": (now - timedelta(seconds=3), now - timedelta(seconds=3)),  # a fresh clean shutdown
        "old-stop:3:c": (now - timedelta(hours=2), now - timedelta(hours=2)),
        "killed:4:d": (now - timedelta(seconds=30), None),
    }
    for worker_id, (last_seen, stopped) in beats.items():
        WorkerHeartbeat.objects.create(
            worker_id=worker_id, hostname="h", pid=1, started_at=now, last_seen_at=last_seen, stopped_at=stopped
        )

    call_command("outbox_status", "--json")
    data = json.loads(capsys.readouterr().out)
    call_command("outbox_status")
    text = capsys.readouterr().out

    assert [w["worker_id"] for w in data["workers"]] == ["live:1:a"]
    assert [w["worker_id"] for w in data["stopped_workers"]] == ["stopped:2:b", "old-stop:3:c"]
    assert [w["worker_id"] for w in data["dead_workers"]] == ["killed:4:d"]
    killed = data["dead_workers"][0]
    assert (killed["last_seen_at"], killed["stopped_at"]) == (beats["killed:4:d"][0].isoformat(), None)
    assert data["stopped_workers"][1]["stopped_at"] == beats["old-stop:3:c"][1].isoformat()
    assert "workers parados: 2" in text and "workers mortos: 1" in text
    assert "killed:4:d visto por último em" in text
    assert "parado em" in text
