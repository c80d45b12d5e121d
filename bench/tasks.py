"""Work that needs Django, run as `python -m bench.tasks <task> ...` in a child process.

DJANGO_SETTINGS_MODULE picks ours (bench.oursite.settings) or the references'
(bench.refs.settings). Each task prints one JSON object on its last line.
"""

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.oursite.settings")
django.setup()

from django.db import connection, connections, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from backend.enrollments.models import Enrollment  # noqa: E402
from backend.enrollments.services import enrollment_create, normalize_email  # noqa: E402
from backend.products.models import Product  # noqa: E402

OURS_TABLES = ["outbox_worker_deliveryattempt", "outbox_worker_outboxmessage", "enrollments_enrollment"]


def bench_product() -> Product:
    product, _ = Product.objects.get_or_create(
        slug="bench-curso", defaults={"name": "Curso de Benchmark", "price": Decimal("497.00")}
    )
    return product


def truncate(tables: list[str], using: str = "default") -> None:
    with connections[using].cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")


def rendered_confirmation() -> tuple[str, str, str, str]:
    """The real pt-BR confirmation email (subject, text, html, to) for one bench enrollment."""
    from bench.oursite.views import render_confirmation

    enrollment = Enrollment(product=bench_product(), name="Ana Souza", email="ana@example.com", pk=1)
    subject, text, html = render_confirmation(enrollment)
    return subject, text, html, enrollment.email


# --- ours --------------------------------------------------------------------


def task_reset_ours(args: argparse.Namespace) -> dict:
    truncate(OURS_TABLES)
    return {"product": bench_product().pk}


def seed_ours(count: int, tag: str, using: str = "default", status: str = "pending") -> None:
    """Insert `count` copies of a real confirmation email straight into the outbox table."""
    from outbox_worker.models import OutboxMessage

    if using == "default":
        with transaction.atomic():
            template = enrollment_create(product=bench_product(), name="Ana Souza", email=f"seed-{tag}@example.com")
        row = OutboxMessage.objects.get(source=template.outbox_source)
        row_id = row.pk
    else:
        subject, text, html, to = rendered_confirmation()
        row = OutboxMessage.objects.using(using).create(
            from_email="Cursos <nao-responda@localhost>",
            to=[to],
            subject=subject,
            body_text=text,
            body_html=html,
            message_id=f"<template.{tag}@bench.local>",
            dedup_key=f"template:{tag}",
        )
        row_id = row.pk
    columns = [
        f.column
        for f in OutboxMessage._meta.concrete_fields
        if f.column not in ("id", "message_id", "dedup_key", "status", "available_at")
    ]
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = (
        f"INSERT INTO {OutboxMessage._meta.db_table} ({cols}, message_id, dedup_key, status, available_at) "
        f"SELECT {cols}, '<bench.' || %s || '.' || g || '@bench.local>', 'bench:' || %s || ':' || g, %s, now() "
        f"FROM {OutboxMessage._meta.db_table}, generate_series(1, %s) AS g WHERE id = %s"
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, [tag, tag, status, count, row_id])
        cursor.execute(f"DELETE FROM {OutboxMessage._meta.db_table} WHERE id = %s", [row_id])
        cursor.execute(f"ANALYZE {OutboxMessage._meta.db_table}")


def task_seed_ours(args: argparse.Namespace) -> dict:
    truncate(OURS_TABLES)
    seed_ours(args.count, args.tag)
    return {"seeded": args.count}


def task_seed_soak(args: argparse.Namespace) -> dict:
    """The chaos soak's queue: `count` confirmation emails, each to its own recipient (greylisting is per address)."""
    from outbox_worker.models import OutboxMessage

    truncate(OURS_TABLES)
    seed_ours(args.count, args.tag)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {OutboxMessage._meta.db_table} SET \"to\" = jsonb_build_array('soak' || id || '@example.com')"
        )
    return {"seeded": args.count}


def task_counts_ours(args: argparse.Namespace) -> dict:
    from django.db.models import Count

    from outbox_worker.models import OutboxMessage

    rows = OutboxMessage.objects.values("status").annotate(n=Count("id")).order_by()
    return {row["status"]: row["n"] for row in rows}


def task_dump_ours(args: argparse.Namespace) -> dict:
    """Every outbox row's Message-ID and status (the soak and the faulty drain audit them against the sink)."""
    from outbox_worker.models import OutboxMessage

    return {"rows": list(OutboxMessage.objects.order_by().values_list("message_id", "status"))}


def task_trigger_name(args: argparse.Namespace) -> dict:
    """The NOTIFY trigger on the outbox table (the notify benchmark switches it on and off)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'outbox_worker_outboxmessage'::regclass AND NOT tgisinternal"
        )
        names = [row[0] for row in cursor.fetchall()]
    return {"trigger": names[0] if names else None, "all": names}


def task_index_writes(args: argparse.Namespace) -> dict:
    """Which indexes one enrollment_create writes: every index of the two tables whose predicate the new row meets.

    The enrollment is created and rolled back; a partial index counts only if its WHERE holds for the row.
    """
    product = bench_product()
    found: dict[str, list[str]] = {}
    with transaction.atomic():
        enrollment = enrollment_create(
            product=product, name="Ana Souza", email=f"idx.{uuid.uuid4().hex[:8]}@example.com"
        )
        from outbox_worker.models import OutboxMessage

        row = OutboxMessage.objects.get(source=enrollment.outbox_source)
        with connection.cursor() as cursor:
            for table, pk in (("enrollments_enrollment", enrollment.pk), ("outbox_worker_outboxmessage", row.pk)):
                cursor.execute(
                    "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
                    "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = %s::regclass ORDER BY c.relname",
                    [table],
                )
                for name, predicate in cursor.fetchall():
                    written = True
                    if predicate:
                        cursor.execute(f"SELECT count(*) FROM {table} WHERE id = %s AND ({predicate})", [pk])
                        written = cursor.fetchone()[0] == 1
                    found.setdefault(table, []).append(f"{name}{'' if written else ' (not written: partial)'}")
            cursor.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox_worker_outboxmessage'::regclass "
                "AND NOT tgisinternal"
            )
            triggers = cursor.fetchone()[0]
        transaction.set_rollback(True)
    per_table = {table: sum("not written" not in name for name in names) for table, names in found.items()}
    return {"indexes": found, "per_enqueue": {**per_table, "total": sum(per_table.values()), "triggers": triggers}}


def task_index_audit(args: argparse.Namespace) -> dict:
    """EXPLAIN every outbox query that could use an index, on a big table (bench_claim_big); name the index used.

    The queries are the real ones where they are importable (the claim statement, outbox_search,
    outbox_kinds, capped_count); the admin changelist's are written as the admin builds them.
    """
    import re

    from django.db.models import Count, Min

    from outbox_worker import claim, selectors
    from outbox_worker.models import OutboxMessage, OutboxStatus

    using = args.using
    qs = OutboxMessage.objects.using(using)
    now = timezone.now()
    with connections[using].cursor() as cursor:
        cursor.execute(
            'SELECT id, source, message_id, "to"->>0 FROM outbox_worker_outboxmessage ORDER BY id DESC LIMIT 1'
        )
        pk, source, message_id, address = cursor.fetchone()
        cursor.execute("UPDATE outbox_worker_outboxmessage SET resent_from_id = %s WHERE id = %s", [pk - 1, pk])
        cursor.execute("ANALYZE outbox_worker_outboxmessage")
    search = lambda term: selectors.outbox_search(queryset=qs, term=term)  # noqa: E731
    claim_params = {
        "sending": OutboxStatus.SENDING, "pending": OutboxStatus.PENDING, "worker": "audit", "now": now,
        "until": now + timedelta(seconds=120), "limit": 50,
        # The claim takes its time from the database and its staleness from here (claim.claim_batch).
        "lease": 120.0, "stale": -20.0,
    }  # fmt: skip
    queries = {
        "claim (claim.py)": ("sql", claim._POSTGRES_CLAIM, claim_params),
        "health: oldest due (selectors.outbox_health)": qs.filter(status="pending", available_at__lte=now)
        .order_by()
        .values("status")
        .annotate(at=Min("available_at")),
        "health: oldest expired lease": qs.filter(status="sending", locked_until__lt=now)
        .order_by()
        .values("status")
        .annotate(at=Min("available_at")),
        "health: failed in the last hour": qs.filter(status="failed", updated_at__gte=now - timedelta(hours=1))
        .order_by()
        .values("status")
        .annotate(n=Count("id")),
        "dashboard: capped count of failed (selectors.capped_count)": qs.filter(status="failed").order_by()[:10001],
        "dashboard: oldest due": qs.filter(status="pending", available_at__lte=now).order_by("available_at", "id")[:1],
        "workers seen: leases held (selectors.outbox_workers_seen)": qs.filter(status="sending", locked_until__gt=now)
        .order_by()
        .values("locked_by")
        .annotate(n=Count("id")),
        "kinds (selectors.outbox_kinds)": ("sql", selectors._KINDS_SQL, [selectors.MAX_KINDS]),
        "admin list, newest first (admin_list)": qs.order_by("-created_at", "-id")[:100],
        "admin list, status=failed": qs.filter(status="failed").order_by("-created_at", "-id")[:100],
        "admin list, kind filter": qs.filter(kind="enrollment_confirmation").order_by("-created_at", "-id")[:100],
        "admin list, created today": qs.filter(created_at__gte=now - timedelta(days=1)).order_by("-created_at", "-id")[
            :100
        ],
        "search by address (outbox_search)": search(address),
        "search by Message-ID": search(message_id),
        "search by enrollment (source)": search("matrícula 42"),
        "messages for a source (selectors.outbox_messages_for_source)": qs.filter(source=source).order_by(
            "-created_at", "-id"
        ),
        "a message's resends (admin page)": qs.filter(resent_from_id=pk - 1).order_by("id"),
        "prune: unlink resends (services.outbox_prune)": qs.filter(resent_from_id__in=[pk - 1, pk - 2]),
        "dedup on enqueue (services.outbox_enqueue, the unique constraint)": qs.filter(dedup_key=f"x:{pk}"),
    }
    plans: dict[str, dict] = {}
    for label, query in queries.items():
        with transaction.atomic(using=using):
            if isinstance(query, tuple):
                with connections[using].cursor() as cursor:
                    cursor.execute("EXPLAIN (COSTS OFF) " + query[1], query[2])
                    plan = "\n".join(row[0] for row in cursor.fetchall())
            else:
                plan = query.explain()
            transaction.set_rollback(True, using=using)
        used = sorted(
            set(re.findall(r"(?:Index Scan|Index Only Scan|Bitmap Index Scan)(?: Backward)? (?:using|on) (\w+)", plan))
        )
        plans[label] = {"indexes": used, "plan": plan}
    with connections[using].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM outbox_worker_outboxmessage")
        rows = cursor.fetchone()[0]
        cursor.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'outbox_worker_outboxmessage'")
        every = sorted(row[0] for row in cursor.fetchall())
    used_by = {name: [label for label, p in plans.items() if name in p["indexes"]] for name in every}
    return {"rows": rows, "plans": plans, "used_by": used_by}


def _time_interleaved(variants: dict, args: argparse.Namespace) -> dict:
    """Time each variant in interleaved blocks; report percentiles and the ratio to "without_email"."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(20):  # warm-up
        for fn in variants.values():
            fn()
    for _round in range(args.rounds):
        for name, fn in variants.items():
            for _ in range(args.block):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    base = statistics.median(times["without_email"])
    result = {"n_per_variant": len(times["without_email"])}
    for name, values in times.items():
        values.sort()
        result[name] = {
            "median_ms": statistics.median(values) * 1000,
            "p90_ms": values[int(len(values) * 0.9)] * 1000,
            "mean_ms": statistics.fmean(values) * 1000,
            "ratio_median": statistics.median(values) / base,
        }
    return result


def task_enqueue_cost(args: argparse.Namespace) -> dict:
    """Benchmark 2: enrollment create with the outbox write vs without email, interleaved."""
    product = bench_product()
    truncate([*OURS_TABLES, "outbox_worker_outboxtask"])
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))

    def with_outbox() -> None:
        enrollment_create(product=product, name="Ana Souza", email=f"a{next(counter)}.{run}@example.com")

    def without_email() -> None:
        # enrollment_create minus enrollment_queue_confirmation: same normalising, one transaction.
        email = normalize_email(f"b{next(counter)}.{run}@example.com")
        with transaction.atomic():
            Enrollment.objects.create(product=product, name="Ana Souza".strip(), email=email, phone="")

    from outbox_worker.services import outbox_enqueue

    subject, text, html, _to = rendered_confirmation()

    def outbox_prerendered() -> None:
        # Where the extra time goes: the same two inserts with the email already rendered.
        email = normalize_email(f"c{next(counter)}.{run}@example.com")
        with transaction.atomic():
            enrollment = Enrollment.objects.create(product=product, name="Ana Souza", email=email, phone="")
            outbox_enqueue(
                to=[email],
                subject=subject,
                body_text=text,
                body_html=html,
                kind="enrollment_confirmation",
                source=enrollment.outbox_source,
                dedup_key=f"enrollment_confirmation:{enrollment.pk}",
            )

    from django.conf import settings

    def with_outbox_and_staff_notice() -> None:
        # With STAFF_WEBHOOK_URL set, enrollment_create also queues the staff channel's notice (a second
        # row, an OutboxTask): a second side effect post-office's side does not have, so shown apart.
        settings.STAFF_WEBHOOK_URL = "https://staff.example.com/hook"
        try:
            enrollment_create(product=product, name="Ana Souza", email=f"s{next(counter)}.{run}@example.com")
        finally:
            settings.STAFF_WEBHOOK_URL = ""

    variants = {
        "without_email": without_email,
        "with_outbox": with_outbox,
        "outbox_prerendered": outbox_prerendered,
        "with_outbox_and_staff_notice": with_outbox_and_staff_notice,
    }
    return _time_interleaved(variants, args)


def task_enqueue_cost_refs(args: argparse.Namespace) -> dict:
    """Benchmark 2, references: the same create plus post-office / django-mailer queueing."""
    import mailer
    from post_office import mail

    product = bench_product()
    truncate(["enrollments_enrollment"])
    truncate(["post_office_email"])
    truncate(["mailer_message"])
    run = uuid.uuid4().hex[:8]
    counter = iter(range(10**9))
    from bench.oursite.views import render_confirmation

    def create(prefix: str) -> Enrollment:
        email = normalize_email(f"{prefix}{next(counter)}.{run}@example.com")
        return Enrollment.objects.create(product=product, name="Ana Souza", email=email, phone="")

    def without_email() -> None:
        with transaction.atomic():
            create("b")

    def post_office() -> None:
        with transaction.atomic():
            enrollment = create("p")
            subject, text, html = render_confirmation(enrollment)
            mail.send([enrollment.email], subject=subject, message=text, html_message=html)

    import logging

    from outbox_worker.logevents import log_event

    logger = logging.getLogger("backend.enrollments")

    def post_office_logged() -> None:
        # enrollment_create's whole job written with post-office: it also logs the enrollment
        # (`enrollments.created`, the same line through the same logging settings). The like-for-like one.
        with transaction.atomic():
            enrollment = create("l")
            subject, text, html = render_confirmation(enrollment)
            email = mail.send([enrollment.email], subject=subject, message=text, html_message=html)
        log_event(
            logger, logging.INFO, "enrollments.created", id=enrollment.pk, product=product.pk, message_id=email.pk
        )

    def django_mailer() -> None:
        with transaction.atomic():
            enrollment = create("m")
            subject, text, html = render_confirmation(enrollment)
            mailer.send_html_mail(subject, text, html, None, [enrollment.email])

    variants = {
        "without_email": without_email,
        "post_office": post_office,
        "post_office_logged": post_office_logged,
        "django_mailer": django_mailer,
    }
    return _time_interleaved(variants, args)


# --- references ----------------------------------------------------------------


def task_seed_postoffice(args: argparse.Namespace) -> dict:
    from post_office import mail

    truncate(["post_office_email"])
    subject, text, html, to = rendered_confirmation()
    for start in range(0, args.count, 1000):
        n = min(1000, args.count - start)
        mail.send_many(
            [{"recipients": [to], "subject": subject, "message": text, "html_message": html} for _ in range(n)]
        )
    return {"seeded": args.count}


def task_seed_mailer(args: argparse.Namespace) -> dict:
    from django.core.mail import EmailMultiAlternatives
    from mailer.models import Message

    truncate(["mailer_message", "mailer_messagelog"])
    subject, text, html, to = rendered_confirmation()
    batch = []
    for _ in range(args.count):
        email = EmailMultiAlternatives(subject, text, None, [to])
        email.attach_alternative(html, "text/html")
        message = Message()
        message.email = email
        batch.append(message)
    Message.objects.bulk_create(batch, batch_size=1000)
    return {"seeded": args.count}


def task_counts_refs(args: argparse.Namespace) -> dict:
    from mailer.models import Message
    from post_office.models import Email

    return {"post_office_queued": Email.objects.filter(status=2).count(), "mailer_queued": Message.objects.count()}


# --- latency generator ------------------------------------------------------------


def task_latency_gen(args: argparse.Namespace) -> dict:
    """Benchmark 6: enroll at a steady rate; record each email's Message-ID and commit time."""
    from email.utils import make_msgid

    product = bench_product()
    run = uuid.uuid4().hex[:8]
    interval = 1.0 / args.rate
    total = int(args.rate * args.seconds)
    records = []
    if args.kind == "mailer":
        import mailer

        from bench.oursite.views import render_confirmation
    start = time.perf_counter() + 0.2
    late = 0
    for i in range(total):
        target = start + i * interval
        pause = target - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        else:
            late += 1
        email = f"lat{i}.{run}@example.com"
        if args.kind == "ours":
            enrollment = enrollment_create(product=product, name="Ana Souza", email=email)
            committed = time.time()
            from outbox_worker.models import OutboxMessage

            message_id = OutboxMessage.objects.filter(source=enrollment.outbox_source).values_list(
                "message_id", flat=True
            )[0]
        else:
            message_id = make_msgid(domain="bench.local")
            with transaction.atomic():
                enrollment = Enrollment.objects.create(product=product, name="Ana Souza", email=email)
                subject, text, html = render_confirmation(enrollment)
                mailer.send_html_mail(subject, text, html, None, [email], headers={"Message-ID": message_id})
            committed = time.time()
        records.append((committed, message_id))
    with open(args.out, "w") as fh:
        for committed, message_id in records:
            fh.write(f"{committed:.6f} {message_id}\n")
    return {"enrolled": total, "late_starts": late, "seconds": time.perf_counter() - start}


# --- claim query ------------------------------------------------------------------


def task_claim_setup(args: argparse.Namespace) -> dict:
    """Benchmark 7: fill one claim database with `finished` sent rows plus `due` pending rows."""
    from outbox_worker.models import OutboxMessage

    truncate(["outbox_worker_deliveryattempt", "outbox_worker_outboxmessage"], using=args.using)
    started = time.perf_counter()
    seed_ours(args.finished, f"{args.using}-sent", using=args.using, status="sent")
    with connections[args.using].cursor() as cursor:
        cursor.execute(f"UPDATE {OutboxMessage._meta.db_table} SET sent_at = now()")
    seed_ours(args.due, f"{args.using}-due", using=args.using, status="pending")
    with connections[args.using].cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {OutboxMessage._meta.db_table}")
    return {"using": args.using, "finished": args.finished, "due": args.due, "seconds": time.perf_counter() - started}


def task_claim_time(args: argparse.Namespace) -> dict:
    """Benchmark 7: time the real claim statement on both databases, alternating, rolled back."""
    from outbox_worker import claim
    from outbox_worker.models import OutboxStatus

    # The statement the worker runs, imported (never copied); found by content if it is renamed.
    sql = getattr(claim, "_POSTGRES_CLAIM", None) or next(
        value for value in vars(claim).values() if isinstance(value, str) and "SKIP LOCKED" in value
    )
    aliases = ["claim_small", "claim_big"]
    times: dict[str, list[float]] = {alias: [] for alias in aliases}
    now = timezone.now()
    params = {
        "sending": OutboxStatus.SENDING,
        "pending": OutboxStatus.PENDING,
        "worker": "bench:claim",
        "now": now,
        "until": now + timedelta(seconds=120),
        "limit": args.limit,
        # The claim takes its time from the database and its staleness from here (claim.claim_batch).
        "lease": 120.0,
        "stale": -20.0,
    }
    explain = {}
    for rep in range(args.reps + 5):
        for alias in aliases:
            with transaction.atomic(using=alias):
                with connections[alias].cursor() as cursor:
                    start = time.perf_counter()
                    cursor.execute(sql, params)
                    rows = cursor.fetchall()
                    elapsed = time.perf_counter() - start
                transaction.set_rollback(True, using=alias)
            assert len(rows) == args.limit, (alias, len(rows))
            if rep >= 5:
                times[alias].append(elapsed)
    for alias in aliases:
        with transaction.atomic(using=alias):
            with connections[alias].cursor() as cursor:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF, TIMING OFF) " + sql, params)
                explain[alias] = "\n".join(row[0] for row in cursor.fetchall())
            transaction.set_rollback(True, using=alias)
    result = {"limit": args.limit, "reps": args.reps, "explain": explain}
    for alias, values in times.items():
        values.sort()
        result[alias] = {
            "median_ms": statistics.median(values) * 1000,
            "p90_ms": values[int(len(values) * 0.9)] * 1000,
        }
    with connections["claim_big"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM outbox_worker_outboxmessage")
        result["claim_big_rows"] = cursor.fetchone()[0]
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('outbox_worker_outboxmessage'))")
        result["claim_big_size"] = cursor.fetchone()[0]
    result["ratio_median"] = result["claim_big"]["median_ms"] / result["claim_small"]["median_ms"]
    return result


# --- the ceiling ----------------------------------------------------------------------


def task_smtplib_ceiling(args: argparse.Namespace) -> dict:
    """Benchmark 3's ceiling: a bare smtplib loop on one connection, the same email bytes."""
    import smtplib

    from django.core.mail import EmailMultiAlternatives

    subject, text, html, to = rendered_confirmation()
    email = EmailMultiAlternatives(subject, text, "Cursos <nao-responda@localhost>", [to])
    email.attach_alternative(html, "text/html")
    email.extra_headers["Message-ID"] = "<MSGID>"
    raw = email.message().as_bytes(linesep="\r\n")
    start = time.perf_counter()
    smtp = smtplib.SMTP("127.0.0.1", args.port, timeout=10)
    for i in range(args.count):
        if args.build:
            # The same loop, but each email is built by Django as the worker builds it.
            email = EmailMultiAlternatives(subject, text, "Cursos <nao-responda@localhost>", [to])
            email.attach_alternative(html, "text/html")
            email.extra_headers["Message-ID"] = f"<ceiling.{i}@bench.local>"
            smtp.sendmail("nao-responda@localhost", [to], email.message().as_bytes(linesep="\r\n"))
            continue
        smtp.sendmail("nao-responda@localhost", [to], raw.replace(b"<MSGID>", f"<ceiling.{i}@bench.local>".encode()))
    smtp.quit()
    elapsed = time.perf_counter() - start
    return {"sent": args.count, "seconds": elapsed, "rate": args.count / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="task", required=True)
    sub.add_parser("reset-ours")
    for name in ("seed-ours", "seed-postoffice", "seed-mailer", "seed-soak"):
        p = sub.add_parser(name)
        p.add_argument("count", type=int)
        p.add_argument("--tag", default=uuid.uuid4().hex[:8])
    sub.add_parser("counts-ours")
    sub.add_parser("dump-ours")
    sub.add_parser("trigger-name")
    sub.add_parser("index-writes")
    sub.add_parser("index-audit").add_argument("--using", default="claim_big")
    sub.add_parser("counts-refs")
    for name in ("enqueue-cost", "enqueue-cost-refs"):
        p = sub.add_parser(name)
        p.add_argument("--rounds", type=int, default=10)
        p.add_argument("--block", type=int, default=50)
    p = sub.add_parser("latency-gen")
    p.add_argument("--kind", choices=["ours", "mailer"], required=True)
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("smtplib-ceiling")
    p.add_argument("count", type=int)
    p.add_argument("--build", action="store_true", help="build every email with Django (no prebuilt bytes)")
    p.add_argument("--port", type=int, required=True)
    p = sub.add_parser("claim-setup")
    p.add_argument("--using", required=True)
    p.add_argument("--finished", type=int, required=True)
    p.add_argument("--due", type=int, default=1000)
    p = sub.add_parser("claim-time")
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--limit", type=int, default=50)
    args = parser.parse_args()
    fn = globals()["task_" + args.task.replace("-", "_")]
    result = fn(args)
    sys.stdout.write(json.dumps(result) + "\n")
    connection.close()


if __name__ == "__main__":
    main()
