"""Unit tests of the pure parts of the configuration: redaction, cron, parameter types."""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from drillbook.config.notebooks import Parameter, coerce_parameter
from drillbook.config.schedule import Cron
from drillbook.config.secrets import Redactor, SecretRef
from drillbook.errors import ConfigError, NotebookError, SecretError


# ----------------------------------------------------------------------------- secrets
def test_redactor_scrubs_value_and_its_escaped_forms() -> None:
    r = Redactor()
    r.add("db", 'p@ss"word\\x')
    text = 'raw p@ss"word\\x json p@ss\\"word\\\\x url p%40ss%22word%5Cx'
    scrubbed = r.scrub(text)
    assert "p@ss" not in scrubbed and "p%40ss" not in scrubbed
    assert scrubbed.count("[REDACTED:db]") == 3


def test_redactor_scrubs_nested_structures_including_keys() -> None:
    r = Redactor()
    r.add("t", "tok-123456")
    data = {"tok-123456": ["a tok-123456 b", {"k": "tok-123456"}], "n": 3}
    assert r.scrub_obj(data) == {"[REDACTED:t]": ["a [REDACTED:t] b", {"k": "[REDACTED:t]"}], "n": 3}


def test_redactor_prefers_longest_secret() -> None:
    r = Redactor()
    r.add("short", "abcd")
    r.add("long", "abcdefgh")
    assert r.scrub("xabcdefghx abcd") == "x[REDACTED:long]x [REDACTED:short]"


def test_secret_reference_parsing_and_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_PASS", "hunter22")
    assert SecretRef.parse("env:DB_PASS").resolve() == "hunter22"
    (tmp_path / "s").write_text("from-file\n")
    assert SecretRef.parse("file:s").resolve(tmp_path) == "from-file"
    with pytest.raises(SecretError, match="not a secret reference"):
        SecretRef.parse("hunter22")
    with pytest.raises(SecretError, match="shorter than 4"):
        monkeypatch.setenv("TINY", "ab")
        SecretRef.parse("env:TINY").resolve()


# ----------------------------------------------------------------------------- cron
UTC = timezone.utc


@pytest.mark.parametrize("expr, after, expected", [
    ("*/30 * * * *", datetime(2026, 1, 1, 10, 5, tzinfo=UTC), datetime(2026, 1, 1, 10, 30, tzinfo=UTC)),
    ("0 3 * * *", datetime(2026, 1, 1, 3, 0, tzinfo=UTC), datetime(2026, 1, 2, 3, 0, tzinfo=UTC)),
    ("0 2 1 * *", datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 1, 2, 0, tzinfo=UTC)),
    ("0 9 * * mon", datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 30, 9, 0, tzinfo=UTC)),
    ("@monthly", datetime(2026, 12, 5, tzinfo=UTC), datetime(2027, 1, 1, 0, 0, tzinfo=UTC)),
    ("0 0 29 2 *", datetime(2026, 3, 1, tzinfo=UTC), datetime(2028, 2, 29, 0, 0, tzinfo=UTC)),
    ("0 12 1 * 0", datetime(2026, 11, 24, tzinfo=UTC), datetime(2026, 11, 29, 12, 0, tzinfo=UTC)),  # dom OR dow
])
def test_cron_next_after(expr: str, after: datetime, expected: datetime) -> None:
    assert Cron.parse(expr).next_after(after) == expected


def test_cron_previous_before() -> None:
    cron = Cron.parse("0 3 * * *")
    assert cron.previous_before(datetime(2026, 1, 5, 2, 0, tzinfo=UTC)) == datetime(2026, 1, 4, 3, 0, tzinfo=UTC)


def test_due_entries_are_those_whose_cron_fired_since_their_last_run() -> None:
    from drillbook.config.schedule import Entry, due_entries

    daily = Cron.parse("0 3 * * *")
    now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    entries = [Entry("a", "local", daily), Entry("b", "local", daily), Entry("c", "local", daily)]
    last = {("a", "local"): datetime(2026, 1, 5, 4, 0, tzinfo=UTC),   # ran after today's 03:00: not due
            ("b", "local"): datetime(2026, 1, 4, 4, 0, tzinfo=UTC)}   # ran yesterday: due; c never ran: due
    assert [e.drill for e in due_entries(entries, last, now)] == ["b", "c"]


@pytest.mark.parametrize("expr", ["* * *", "61 * * * *", "0 25 * * *", "0 0 0 * *", "x * * * *"])
def test_cron_rejects_bad_expressions(expr: str) -> None:
    with pytest.raises(ConfigError, match="bad cron expression"):
        Cron.parse(expr)


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("type_name, raw, expected", [
    ("int", "3", 3), ("int", 7, 7), ("float", "0.5", 0.5), ("float", 2, 2.0), ("bool", "yes", True),
    ("bool", "false", False), ("str", "abc", "abc"), ("list", "[a, b]", ["a", "b"]), ("dict", {"a": 1}, {"a": 1}),
    ("None", "12", 12), ("str | None", "x", "x"),
])
def test_parameter_coercion(type_name: str, raw: object, expected: object) -> None:
    assert coerce_parameter(Parameter("p", type_name, None, "d"), raw, "-p") == expected


@pytest.mark.parametrize("type_name, raw", [
    ("int", "3.5"), ("int", True), ("float", "fast"), ("bool", "maybe"), ("str", 5), ("list", "a"),
])
def test_parameter_coercion_rejects_wrong_types(type_name: str, raw: object) -> None:
    with pytest.raises(NotebookError, match=f"expects {type_name}"):
        coerce_parameter(Parameter("p", type_name, None, "d"), raw, "-p")
