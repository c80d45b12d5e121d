"""Geometry for the health panel's hourly chart, drawn server-side with plain HTML and CSS (no CDN, no JS)."""

from dataclasses import dataclass
from datetime import datetime

from .selectors import HourBucket


@dataclass(frozen=True)
class ChartColumn:
    start: datetime
    sent: int
    failed: int
    sent_height: float  # percent of the chart's height
    failed_height: float


def chart_columns(hours: list[HourBucket]) -> list[ChartColumn]:
    """Scale each hour's stacked bar (sent below, failed on top) to the busiest hour."""
    peak = max((bucket.sent + bucket.failed for bucket in hours), default=0) or 1
    return [
        ChartColumn(
            start=bucket.start,
            sent=bucket.sent,
            failed=bucket.failed,
            sent_height=round(100 * bucket.sent / peak, 1),
            failed_height=round(100 * bucket.failed / peak, 1),
        )
        for bucket in hours
    ]
