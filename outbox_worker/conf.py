"""The outbox's settings: one property per setting, its default in one place."""

from django.conf import settings


class OutboxSettings:
    @property
    def MAX_ATTEMPTS(self) -> int:
        """Deliveries a message gets before it is marked failed.

        Ten: the quick first retry (FIRST_RETRY), then waits of 30 s doubling
        to an hour (BACKOFF): a message outlives about two hours of a
        recipient's server refusing it for now (greylisting, a full mailbox,
        a server down), where five attempts gave up after seven minutes.
        """
        return int(getattr(settings, "OUTBOX_MAX_ATTEMPTS", 10))

    @property
    def LEASE_SECONDS(self) -> float:
        """How long a claim lasts; after it, another worker may take the row.

        The keeper extends it while a send is in progress (up to
        SEND_DEADLINE), so it only has to outlast a few missed extensions. A
        dead worker's rows come back sooner, through its stale heartbeat.
        """
        return float(getattr(settings, "OUTBOX_LEASE_SECONDS", 120.0))

    @property
    def BATCH_SIZE(self) -> int:
        return int(getattr(settings, "OUTBOX_BATCH_SIZE", 50))

    @property
    def PROCESSES(self) -> int:
        """Worker processes `outbox_worker` runs (--processes): one uses about one CPU.

        Its sender threads share one interpreter lock, so a replica with k vCPUs
        delivers faster with k processes; each opens its own database connections.
        """
        return int(getattr(settings, "OUTBOX_PROCESSES", 1))

    @property
    def TASK_BATCH_SIZE(self) -> int:
        """Tasks a sender claims per turn (at most its share of BATCH_SIZE).

        Small, because tasks run one after another: a claimed task waits for
        those before it, held from other workers, and emails wait for the batch.
        """
        return int(getattr(settings, "OUTBOX_TASK_BATCH_SIZE", 10))

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
    def CLAIM_HOLD_OFF(self) -> float:
        """Seconds a worker waits to claim again after a claim that drained the queue (0: no wait).

        Under a steady trickle of enqueues each claim would find one email:
        a claim, a mark and an outcome written per email, and on PostgreSQL
        a NOTIFY per enrollment. After a claim that found some rows but not a
        full batch, the next one waits this long, and takes together every
        row enqueued meanwhile (idle senders hold no idle lock meanwhile, so
        those enqueues NOTIFY nobody). An email then waits at most this much
        more; the first one after a quiet spell is claimed at once. Never more
        than the poll interval; `--once` does not wait.
        """
        return float(getattr(settings, "OUTBOX_CLAIM_HOLD_OFF", 0.05))

    @property
    def HEARTBEAT_SECONDS(self) -> float:
        """How often a worker records that it is alive (WorkerHeartbeat.last_seen_at)."""
        return float(getattr(settings, "OUTBOX_HEARTBEAT_SECONDS", 5.0))

    @property
    def WORKER_STALE_AFTER(self) -> float:
        """Seconds without a heartbeat after which a worker counts as dead and its rows are taken back.

        A few heartbeats long, so a busy database does not make a live worker
        look dead; a killed worker's rows come back within this plus one poll.
        """
        return float(getattr(settings, "OUTBOX_WORKER_STALE_AFTER", 20.0))

    @property
    def SEND_DEADLINE(self) -> float:
        """Seconds one send may take in all before it is abandoned.

        Past it the worker cuts the backend's connection, stops extending the
        lease and hands the row back with an `abandoned` attempt: a server that
        drip-feeds bytes cannot hold a message (or a sender) forever.
        """
        return float(getattr(settings, "OUTBOX_SEND_DEADLINE", 300.0))

    @property
    def FINISH_EVERY(self) -> int:
        """Messages per database round trip: outcomes written, and next sends marked started.

        Higher means fewer writes per email. A worker killed mid-batch costs
        at most this many messages an attempt (the group marked started) and
        re-sends at most the accepted ones among them; unstarted rows cost nothing.
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
    def FIRST_RETRY(self) -> float:
        """Seconds before the first retry of a message-level transient failure (0: straight to BACKOFF).

        Short, so a one-off temporary reply costs its message half a second
        and a drain with scattered 451s keeps its pace; a greylisting server
        refuses this retry too and the message then follows BACKOFF. Either
        way it is one more RCPT for that message, whether after 0.5 s or 1 s
        (the default until 2026-12-02: with a drain of 2,000 emails taking
        2.2 s, the last refused ones held its 99 % mark back by the second).
        """
        return float(getattr(settings, "OUTBOX_FIRST_RETRY", 0.5))

    @property
    def BACKOFF(self) -> tuple[float, float]:
        """(base, maximum) seconds before the next delivery after a transient failure.

        After the FIRST_RETRY, the delay doubles with each attempt: base,
        2×base, 4×base … up to maximum.
        """
        return tuple(getattr(settings, "OUTBOX_BACKOFF", (30.0, 3600.0)))


outbox_settings = OutboxSettings()
