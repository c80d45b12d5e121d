"""Write docs/benchmarks-data.md: every number from bench/results/*.json with its command."""

import sys

from bench import common

ORDER = ["b1", "b2", "b2h", "b3", "b3a", "b3x", "b4", "b5", "b6", "b7", "b8", "profile"]


def fmt(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def section(name: str, data: dict) -> list[str]:
    lines = [f"## {name}", "", f"Command: `{data['command']}` — {data['when']}, {data['seconds']} s, "]
    lines[-1] += f"load average at start {', '.join(fmt(x, 2) for x in data.get('load_average_at_start', []))}"
    lines.append("")
    if name == "b1":
        lines += [
            "| SMTP | path | requests | p50 ms | p99 ms | max ms | errors | worker timeouts |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for scenario, by_kind in data["scenarios"].items():
            for kind in ("outbox", "sync"):
                r = by_kind[kind]
                errors = f"{r['errors']} {r['error_kinds'] or ''}".strip()
                lines.append(
                    f"| {scenario} | {kind} | {r['requests']} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                    f"{fmt(r['max_ms'])} | {errors} | {by_kind['worker_timeouts']} |"
                )
        lines.append("")
        lines.append(f"Outbox p99 hung / healthy: **{data['outbox_p99_hung_over_healthy']:.2f}×** (target ≤ 1.2×).")
    elif name == "b2":
        lines += ["| variant | median ms | p90 ms | × baseline (median) |", "|---|---|---|---|"]
        for label, part in (("ours", data["ours"]), ("refs", data["refs"])):
            for variant, r in part.items():
                if isinstance(r, dict):
                    lines.append(
                        f"| {label}: {variant} | {fmt(r['median_ms'], 3)} | {fmt(r['p90_ms'], 3)} | "
                        f"{r['ratio_median']:.2f}× |"
                    )
        lines.append("")
        lines.append(f"{data['ours']['n_per_variant']} creates per variant, interleaved in blocks of 50.")
    elif name == "b2h":
        lines += ["| path | requests | p50 ms | p90 ms |", "|---|---|---|---|"]
        for variant in ("without_email", "with_outbox"):
            r = data[variant]
            lines.append(f"| {variant} | {r['requests']} | {fmt(r['p50_ms'], 2)} | {fmt(r['p90_ms'], 2)} |")
        lines += ["", f"p50 ratio: **{data['ratio_p50']:.2f}×**."]
    elif name in ("b3", "b3a", "b3x", "b4", "b5"):
        runs = data["runs"]
        lines += [
            "| sender | round/run | delivered | emails/s at sink | wall s | SMTP connections | duplicates |",
            "|---|---|---|---|---|---|---|",
        ]
        for sender, rs in runs.items():
            for i, r in enumerate(rs if isinstance(rs, list) else [rs]):
                lines.append(
                    f"| {sender} | {i + 1} | {r['delivered']}/{r['expected']} | {fmt(r['rate_per_s'])} | "
                    f"{fmt(r['wall_s'])} | {r['smtp_connections']} | {r['duplicates']} |"
                )
        lines.append("")
        for key in ("ratios", "speedup"):
            if key in data:
                lines.append(f"{key}: " + ", ".join(f"{k} **{v:.2f}×**" for k, v in data[key].items()))
        if "best_ours_vs_post_office" in data:
            lines.append(f"best ours / post-office: **{data['best_ours_vs_post_office']:.2f}×**")
    elif name == "b6":
        lines += ["| sender | delivered | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
        for label, r in data.items():
            if isinstance(r, dict) and "p50_ms" in r:
                lines.append(
                    f"| {label} | {r['delivered']}/{r['enrolled']} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | "
                    f"{fmt(r['p99_ms'])} | {fmt(r['max_ms'])} |"
                )
        lines.append("")
        lines.append(f"Flag that turns notifications off: `{data.get('notify_off_flag')}`.")
    elif name == "b7":
        t = data["timing"]
        lines += [
            f"Claim of {t['limit']} from 1,000 due rows, {t['reps']} repetitions alternating the two databases:",
            "",
            "| finished rows | median ms | p90 ms |",
            "|---|---|---|",
            f"| {data['finished_small']:,} | {fmt(t['claim_small']['median_ms'], 3)} | "
            f"{fmt(t['claim_small']['p90_ms'], 3)} |",
            f"| {data['finished_big']:,} ({t['claim_big_size']}) | {fmt(t['claim_big']['median_ms'], 3)} | "
            f"{fmt(t['claim_big']['p90_ms'], 3)} |",
            "",
            f"Ratio: **{data['ratio']:.2f}×** (target ≤ 2×). `EXPLAIN (ANALYZE, BUFFERS)` on the big table:",
            "",
            "```",
            t["explain"]["claim_big"],
            "```",
        ]
    elif name == "b8":
        lines += [
            f"Delivered {data['delivered']}/{data['expected']} at {fmt(data['rate_per_s'])}/s; "
            f"RSS peak **{fmt(data['peak_rss_mib'])} MiB**, max in the first tenth of the drain "
            f"{fmt(data['rss_first_tenth_mib'])} MiB, in the last tenth {fmt(data['rss_last_tenth_mib'])} MiB "
            f"(growth {fmt(data['growth_mib'], 2)} MiB); {data.get('samples_taken', len(data['samples']))} samples.",
        ]
    elif name == "profile":
        lines += [
            f"{data['delivered']} emails over {data['smtp_connections']} SMTP connections. Share of the "
            "worker's wall time (py-spy `--idle`, so waiting on PostgreSQL or SMTP counts):",
            "",
            "| part | % |",
            "|---|---|",
        ]
        lines += [f"| {label} | {share} |" for label, share in data["share_percent"].items()]
    lines.append("")
    return lines


def main() -> None:
    quick = "--quick" in sys.argv
    suffix = "-quick" if quick else ""
    out = [
        "# Benchmark data",
        "",
        "Generated by `bench/run report` from `bench/results/*.json`; the analysis is in "
        "[benchmarks.md](benchmarks.md).",
        "",
    ]
    machine = None
    for name in ORDER:
        data = common.load(f"{name}{suffix}")
        if data is None:
            continue
        machine = machine or data.get("machine")
        out += section(name, data)
    if machine:
        out += [
            "## Machine",
            "",
            f"`nproc`: {machine['nproc']}; PostgreSQL {machine['postgres']}; Python {machine['python']}; "
            f"commit {machine['git']}.",
            "",
            "```",
            machine["free_h"],
            "",
            machine["lscpu_head"],
            "```",
            "",
        ]
    target = common.DOCS / f"benchmarks-data{suffix}.md"
    target.write_text("\n".join(out))
    common.log(f"wrote {target.relative_to(common.ROOT)}")
