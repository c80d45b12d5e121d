"""The outbox's settings: one property per setting, its default in one place."""

from django.conf import settings


class OutboxSettings:
    @property
    def MAX_ATTEMPTS(self) -> int:
        """Deliveries a message gets before it is marked failed."""
        return int(getattr(settings, "OUTBOX_MAX_ATTEMPTS", 5))

    @property
    def LEASE_SECONDS(self) -> float:
        """How long a claim lasts; after it, another worker may take the row.

        Must cover one send with its in-process reconnects (EMAIL_TIMEOUT ×
        SEND_TRIES plus the SEND_RETRY_WAIT waits), or a slow send is delivered twice.
        """
        return float(getattr(settings, "OUTBOX_LEASE_SECONDS", 120.0))

    @property
    def BATCH_SIZE(self) -> int:
        return int(getattr(settings, "OUTBOX_BATCH_SIZE", 50))

    @property
    def POLL_INTERVAL(self) -> float:
        """Seconds the worker sleeps when it found nothing to send."""
        return float(getattr(settings, "OUTBOX_POLL_INTERVAL", 2.0))

    @property
    def NOTIFY(self) -> bool:
        """On PostgreSQL, wake idle workers with LISTEN/NOTIFY at commit time.

        Turn off behind PgBouncer in transaction pooling, where LISTEN does not
        work; polling alone stays correct, only slower to react.
        """
        return bool(getattr(settings, "OUTBOX_NOTIFY", True))

    @property
    def ASYNC_COMMIT(self) -> bool:
        """Let the worker's own commits skip waiting for the disk flush (PostgreSQL).

        Safe for an outbox: if the database server crashes, the worker's last
        fraction of a second of claims and outcomes can be lost, which sends
        those emails again (at-least-once) but never loses one — enqueues are
        made by the web process and keep full durability. Roughly doubles
        delivery throughput on a disk that flushes slowly.
        """
        return bool(getattr(settings, "OUTBOX_ASYNC_COMMIT", True))

    @property
    def FINISH_EVERY(self) -> int:
        """Outcomes written per database round trip inside a batch.

        Higher means fewer writes per email; a worker killed with outcomes
        still unwritten has those emails sent again after the lease.
        """
        return int(getattr(settings, "OUTBOX_FINISH_EVERY", 10))

    @property
    def FINISH_WITHIN(self) -> float:
        """Seconds an outcome may wait in memory before it is written, however few there are."""
        return float(getattr(settings, "OUTBOX_FINISH_WITHIN", 1.0))

    @property
    def SEND_TRIES(self) -> int:
        """Tries inside one delivery when the provider fails (connection, TLS, 421 …).

        The first send, an immediate reconnect, then reconnects after the
        SEND_RETRY_WAIT waits. Message-level errors (451, 550) get one try and
        go back to the queue. A hung server costs up to SEND_TRIES × EMAIL_TIMEOUT.
        """
        return int(getattr(settings, "OUTBOX_SEND_TRIES", 4))

    @property
    def SEND_RETRY_WAIT(self) -> tuple[float, float]:
        """(first, maximum) seconds between reconnects after the immediate one: 0.1, 0.5, 0.5 … jittered."""
        return tuple(getattr(settings, "OUTBOX_SEND_RETRY_WAIT", (0.1, 0.5)))

    @property
    def PAUSE_BACKOFF(self) -> tuple[float, float]:
        """(first, maximum) seconds a worker pauses delivery after a provider-level failure.

        Each failed probe doubles the pause (jittered down by up to 20 %), up to
        the maximum; the first success resumes delivery. See provider.py.
        """
        return tuple(getattr(settings, "OUTBOX_PAUSE_BACKOFF", (1.0, 300.0)))

    @property
    def BACKOFF(self) -> tuple[float, float]:
        """(base, maximum) seconds before the next delivery after a transient failure.

        The delay doubles with each attempt: base, 2×base, 4×base … up to maximum.
        """
        return tuple(getattr(settings, "OUTBOX_BACKOFF", (30.0, 3600.0)))


outbox_settings = OutboxSettings()
