"""The dashboard's "overdue" is `drillbook schedule`'s: the cron fired and no run (passed or failed)
followed within the entry's grace — one function (``schedule.missed_firing``) behind both."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from drillbook.config import schedule
from drillbook.site import data as site_data
from drillbook.site import status as site_status

LAST = datetime(2026, 1, 1, 0, 0, 10, tzinfo=timezone.utc)


def _run(status: str) -> site_data.RunSummary:
    return site_data.RunSummary(1, "r1", "drill", "dev", "drill", "drill", status, None, None,
                                "2026-01-01T00:00:10.000Z", False, (), {}, (), True, True)


def _overdue_on_dashboard(entry: schedule.Entry, status: str, now: datetime, tmp: Path) -> bool:
    archive = site_data.Archive(tmp, [_run(status)], {}, site_data.VerifyState(), [])
    (row,) = site_status.dashboard_rows([], [entry], archive, now)
    return row.due.overdue


def test_dashboard_and_schedule_agree_on_overdue_with_the_entrys_grace(tmp_path: Path) -> None:
    hourly = schedule.Entry("drill", "dev", schedule.Cron.parse("0 * * * *"), grace=timedelta(hours=2))
    for status in ("passed", "failed"):  # a failed run answers the firing as well as a passed one
        for hours, expected in ((0.5, False), (1.5, False), (2.5, False), (3.5, True), (30, True)):
            now = LAST + timedelta(hours=hours)
            said = schedule.overdue_since(hourly, LAST, now) is not None
            assert said == expected, (status, hours)
            # 1.5 h: the cron fired at 01:00 with no run since, but the grace (2 h) has not run out
            assert _overdue_on_dashboard(hourly, status, now, tmp_path) == said, (status, hours)


def test_a_metadata_cron_has_the_default_grace() -> None:
    now = datetime(2026, 3, 10, 3, 30, tzinfo=timezone.utc)  # a daily 03:00 firing half an hour ago
    last = now - timedelta(days=1)
    assert not site_status.due("0 3 * * *", "metadata", last, now).overdue
    assert site_status.due("0 3 * * *", "metadata", last, now + schedule.DEFAULT_GRACE).overdue
