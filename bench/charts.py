"""PNG charts for docs/benchmarks.md from bench/results/*.json (`bench/run report`)."""

import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import common

OURS_COLOR = "#1f77b4"
REF_COLOR = "#999999"


def load(name: str, quick: bool) -> dict | None:
    return common.load(f"{name}{'-quick' if quick else ''}")


def bars(ax, labels: list[str], values: list[float], colors: list[str], fmt: str = "{:.0f}") -> None:
    drawn = ax.bar(labels, values, color=colors)
    ax.margins(y=0.1)
    for bar, value in zip(drawn, values, strict=True):
        ax.annotate(fmt.format(value), (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")


def experiments(b3x: dict | None, suffix: str) -> None:
    if not b3x:
        return
    import statistics

    fig, ax = plt.subplots(figsize=(12, 4.8))
    names = {
        "stock": "as shipped",
        "finish_every_1": "outcomes written\none per email",
        "sync_commit": "synchronous\ncommit",
        "finish_every_50": "outcomes written\n50 at a time",
        "quiet": "INFO logs off",
        "concurrency_4": "--concurrency 4",
        "post_office": "post-office\n(5 threads)",
        "smtplib_ceiling_building_each_email": "smtplib loop,\nDjango builds\neach email",
        "smtplib_ceiling": "smtplib loop,\nprebuilt bytes",
    }
    keys = [k for k in names if k in b3x["runs"]]
    vals = [statistics.median(r["rate_per_s"] for r in b3x["runs"][k]) for k in keys]
    colors = [REF_COLOR if k.startswith(("smtplib", "post_office")) else OURS_COLOR for k in keys]
    bars(ax, [names[k] for k in keys], vals, colors)
    ax.set_ylabel("emails/s at the sink (median of rounds)")
    ax.set_title(f"3x. The worker as shipped and with one setting changed, {b3x['emails']} emails, fast local sink")
    plt.setp(ax.get_xticklabels(), fontsize=8)
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-worker-changes{suffix}.png", dpi=90)
    plt.close(fig)


def b4_label(key: str) -> str:
    match = re.fullmatch(r"ours_concurrency_(\d+)(?:_batch_(\d+))?", key)
    if match:
        threads, batch = match.groups()
        return f"ours,\n{threads} threads" + (f",\nbatch {batch}" if batch else "")
    return {"ours": "ours,\nsequential", "post_office": "post-office\n(5 threads)"}.get(key, key)


def throughput(b3: dict | None, b4: dict | None, b5: dict | None, suffix: str) -> None:
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), gridspec_kw={"width_ratios": [1, 1.7, 1]})
    if b3:
        names = {"ours": "outbox_\nworker", "post_office": "post-\noffice", "django_mailer": "django-\nmailer"}
        names["smtplib_ceiling"] = "smtplib loop\n(ceiling)"
        vals = [b3["best_rate_per_s"][k] for k in names]
        bars(axes[0], list(names.values()), vals, [OURS_COLOR, REF_COLOR, REF_COLOR, "#bbbbbb"])
        axes[0].set_title(f"3. Throughput, {b3['emails']} emails, fast local sink\n(best of {b3['rounds']} rounds)")
        axes[0].set_ylabel("emails/s at the sink")
    if b4:
        runs = b4["runs"]
        labels = [b4_label(k) for k in runs]
        vals = [runs[k]["rate_per_s"] for k in runs]
        colors = [OURS_COLOR if k.startswith("ours") else REF_COLOR for k in runs]
        bars(axes[1], labels, vals, colors, "{:.1f}")
        axes[1].set_title(
            f"4. Slow provider: sink waits {b4['reply_delay_s'] * 1000:.0f} ms per reply\n"
            f"{b4['emails']} emails; ours: threads = --concurrency, batch = --batch-size"
        )
        axes[1].set_ylabel("emails/s at the sink")
    if b5:
        runs = b5["runs"]
        keys = sorted(runs, key=int)
        vals = [runs[k]["rate_per_s"] for k in keys]
        bars(axes[2], [f"{k} worker{'s' if k != '1' else ''}" for k in keys], vals, [OURS_COLOR] * len(keys))
        dups = sum(runs[k]["duplicates"] for k in keys)
        axes[2].set_title(f"5. Scaling, {b5['emails']} emails\nduplicates at the sink: {dups}")
        axes[2].set_ylabel("emails/s at the sink")
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-throughput{suffix}.png", dpi=90)
    plt.close(fig)


def request_path(b1: dict | None, suffix: str) -> None:
    if not b1:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    scenarios = ["healthy", "slow_1s", "hung"]
    width = 0.2
    for i, (kind, stat, color, hatch) in enumerate(
        [
            ("outbox", "p50_ms", OURS_COLOR, ""),
            ("outbox", "p99_ms", OURS_COLOR, "//"),
            ("sync", "p50_ms", REF_COLOR, ""),
            ("sync", "p99_ms", REF_COLOR, "//"),
        ]
    ):
        xs = [j + (i - 1.5) * width for j in range(len(scenarios))]
        vals = [b1["scenarios"][s][kind][stat] for s in scenarios]
        ax.bar(xs, vals, width, color=color, hatch=hatch, label=f"{kind} {stat[:3]}")
        for x, v in zip(xs, vals, strict=True):
            ax.annotate(f"{v:.0f}", (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(scenarios)), ["SMTP healthy", "SMTP answers after 1 s", "SMTP never answers"])
    ax.set_ylabel("request latency, ms (log)")
    ax.set_title(f"1. POST enrollment under gunicorn, {b1['clients']} clients, {b1['seconds_per_path']} s per path")
    ax.legend()
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-request-path{suffix}.png", dpi=90)
    plt.close(fig)


def latency(b6: dict | None, suffix: str) -> None:
    if not b6:
        return
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, data in b6.items():
        # Without bench/results/raw/ (a fresh checkout) the samples are a note, not a list.
        if not isinstance(data, dict) or not isinstance(data.get("latencies_ms"), list):
            continue
        xs = data["latencies_ms"]
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        name = {
            "ours_default": "ours, LISTEN/NOTIFY (default)",
            "ours_polling_only": "ours, polling only (2 s)",
            "ours_poll_0.1s": "ours, polling only (0.1 s)",
            "mailer_runmailer_pg": "django-mailer runmailer_pg",
        }.get(label, label)
        ax.plot(
            xs,
            ys,
            label=f"{name}: p50 {data['p50_ms']:.0f} ms, p99 {data['p99_ms']:.0f} ms",
            color=REF_COLOR if "mailer" in label else None,
        )
    ax.set_xscale("log")
    ax.set_xlabel("commit → SMTP accept, ms (log)")
    ax.set_ylabel("fraction of emails")
    ax.set_title("6. Delivery latency at a steady 50 enrollments/s")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-latency{suffix}.png", dpi=90)
    plt.close(fig)


def memory(b8: dict | None, suffix: str) -> None:
    if not b8 or not isinstance(b8.get("samples"), list):
        return
    fig, ax = plt.subplots(figsize=(10, 4))
    samples = b8["samples"]
    ax.plot([s[1] for s in samples], [s[2] for s in samples], color=OURS_COLOR)
    ax.set_xlabel("emails accepted by the sink")
    ax.set_ylabel("worker RSS, MiB")
    ax.set_ylim(0, max(s[2] for s in samples) * 1.3)
    ax.set_title(f"8. Worker RSS while draining {b8['expected']} emails (peak {b8['peak_rss_mib']:.1f} MiB)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-memory{suffix}.png", dpi=90)
    plt.close(fig)


def costs(b2: dict | None, b7: dict | None, suffix: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    if b2:
        ours, refs = b2["ours"], b2["refs"]
        labels = ["ours: outbox", "ours: outbox,\nprerendered", "post-office", "django-mailer"]
        vals = [
            ours["with_outbox"]["ratio_median"],
            ours.get("outbox_prerendered", {}).get("ratio_median", 0.0),
            refs["post_office"]["ratio_median"],
            refs["django_mailer"]["ratio_median"],
        ]
        bars(axes[0], labels, vals, [OURS_COLOR, OURS_COLOR, REF_COLOR, REF_COLOR], "{:.2f}×")
        axes[0].axhline(1.3, color="red", linestyle="--", label="target 1.3×")
        axes[0].set_ylabel("× the create without email (median)")
        axes[0].set_title("2. Enqueue cost")
        axes[0].legend()
    if b7:
        t = b7["timing"]
        labels = [f"{b7['finished_small']:,} sent rows", f"{b7['finished_big']:,} sent rows"]
        vals = [t["claim_small"]["median_ms"], t["claim_big"]["median_ms"]]
        bars(axes[1], labels, vals, [REF_COLOR, OURS_COLOR], "{:.2f} ms")
        axes[1].set_ylabel("claim of 50, median ms")
        axes[1].set_title(f"7. Claim query, 1,000 due rows: {b7['ratio']:.2f}×")
    fig.tight_layout()
    fig.savefig(common.DOCS / f"bench-costs{suffix}.png", dpi=90)
    plt.close(fig)


def main() -> None:
    quick = "--quick" in sys.argv
    suffix = "-quick" if quick else ""
    common.DOCS.mkdir(exist_ok=True)
    throughput(load("b3", quick), load("b4", quick), load("b5", quick), suffix)
    experiments(load("b3x", quick), suffix)
    request_path(load("b1", quick), suffix)
    latency(load("b6", quick), suffix)
    memory(load("b8", quick), suffix)
    costs(load("b2", quick), load("b7", quick), suffix)
    common.log(f"charts written to {common.DOCS.relative_to(common.ROOT)}/bench-*{suffix}.png")
