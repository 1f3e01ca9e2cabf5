"""The one "is it due" rule (``schedule.is_due``) and ``due_entries``, which applies it to the schedule."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from drillbook.config.schedule import Cron, Entry, due_entries, is_due
from drillbook.errors import ConfigError

UTC = timezone.utc
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("expr, last, due", [
    ("0 3 * * *", datetime(2026, 12, 1, 4, 0, tzinfo=UTC), False),   # ran after today's 03:00
    ("0 3 * * *", datetime(2026, 12, 1, 3, 0, tzinfo=UTC), False),   # finished at the very firing
    ("0 3 * * *", datetime(2026, 12, 1, 2, 59, 59, tzinfo=UTC), True),  # finished just before it
    ("0 3 * * *", datetime(2026, 11, 30, 4, 0, tzinfo=UTC), True),   # ran yesterday
    ("0 12 * * *", datetime(2026, 11, 30, 12, 30, tzinfo=UTC), True),  # fires exactly now
    ("@monthly", datetime(2026, 11, 2, tzinfo=UTC), True),
    ("@monthly", datetime(2026, 12, 1, 0, 1, tzinfo=UTC), False),
    ("0 9 * * mon", None, True),                                     # never finished
    # Fired on 29 February 2024, more than a year before now: still due, however long ago.
    ("0 0 29 2 *", datetime(2023, 1, 1, tzinfo=UTC), True),
    ("0 0 29 2 *", None, True),
    ("0 0 29 2 *", datetime(2024, 3, 1, tzinfo=UTC), False),         # next firing is in 2028
])
def test_is_due_when_the_cron_fired_since_the_last_finish(expr: str, last: datetime | None, due: bool) -> None:
    assert is_due(Cron.parse(expr), last, NOW) is due


def test_a_cron_that_never_fires_is_a_config_error_not_a_verdict() -> None:
    never = Cron.parse("0 0 30 2 *")
    with pytest.raises(ConfigError, match="never fires"):
        is_due(never, None, NOW)
    with pytest.raises(ConfigError, match="never fires"):
        is_due(never, datetime(2026, 1, 1, tzinfo=UTC), NOW)


def test_run_due_does_not_lose_a_rare_cron_beyond_a_look_back_horizon() -> None:
    leap = Cron.parse("0 0 29 2 *")
    entries = [Entry("leap", "local", leap), Entry("leap", "staging", leap), Entry("leap", "prod", leap)]
    last = {("leap", "local"): datetime(2023, 1, 1, tzinfo=UTC),      # missed 29 Feb 2024: due
            ("leap", "prod"): datetime(2024, 2, 29, 0, 5, tzinfo=UTC)}  # ran on it: not due; staging never ran: due
    assert [e.env for e in due_entries(entries, last, NOW)] == ["local", "staging"]
