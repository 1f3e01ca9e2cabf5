"""Notifications through apprise to a real HTTP receiver on loopback: a failed or errored drill, an
overdue schedule entry and a failed verify are announced, scrubbed; a dead receiver fails nothing."""
from __future__ import annotations

import json
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Project, cli

pytestmark = pytest.mark.integration


class Receiver:
    """An HTTP server on 127.0.0.1 that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.close()


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"json://127.0.0.1:{port}/"


def _notifying_env(project: Project, *urls: str, extra: str = "") -> None:
    for index, url in enumerate(urls):
        os.environ[f"NOTIFY_URL_{index}"] = url
    targets = "".join(f"  - env:NOTIFY_URL_{index}\n" for index in range(len(urls)))
    project.write_env("local", "hosts:\n  here:\n    shell: local\nobjectives:\n  rto_seconds: 30\n"
                               f"notify:\n{targets}{extra}")


def test_a_failed_drill_is_announced_and_a_dead_receiver_is_recorded_not_fatal(
        project: Project, receiver: Receiver) -> None:
    _notifying_env(project, receiver.url, _dead_url())
    project.add_notebook("check_fails.ipynb")
    result = cli(project, "run", "check_fails", "--env", "local")
    assert result.code == 1 and "FAILED check_fails on local" in result.stdout, result.output
    assert "warning: notification to local notify[1] failed" in result.stderr
    (message,) = receiver.messages
    bundle = project.run_dirs()[0]
    assert message["title"] == "drillbook: check_fails on local failed" and message["type"] == "failure"
    body = str(message["message"])
    for line in ("drill: check_fails", "environment: local", "status: failed",
                 "failing check: replica caught up: lag 12 s", f"run: {bundle.name}", f"evidence: {bundle}"):
        assert line in body.splitlines(), body
    record = json.loads((bundle / "record.json").read_text())
    assert record["status"] == "failed"  # the dead receiver did not make it an error
    assert record["notifications"][0] == {"target": "local notify[0]", "ok": True, "error": None}
    assert record["notifications"][1]["target"] == "local notify[1]" and not record["notifications"][1]["ok"]
    assert "127.0.0.1" not in json.dumps(record["notifications"])  # never the URL: it is a secret
    assert cli(project, "verify").code == 0


def test_an_errored_drill_and_a_failed_verify_are_announced_without_secrets(project: Project, receiver: Receiver) -> None:
    canary, token = f"Cn{secrets.token_hex(8)}", f"tok-{secrets.token_hex(8)}"
    os.environ["DRILLBOOK_CANARY"], os.environ["DRILLBOOK_TEST_TOKEN"] = canary, token
    _notifying_env(project, receiver.url, extra="secrets:\n  canary: env:DRILLBOOK_CANARY\n")
    project.add_notebook("leaks_secret.ipynb")
    result = cli(project, "run", "leaks_secret", "--env", "local", "-p", "token_ref=env:DRILLBOOK_TEST_TOKEN")
    assert result.code == 1, result.output
    (message,) = receiver.messages
    text = json.dumps(message)
    assert "status: error" in str(message["message"]) and "connection failed with password" in text
    assert "[REDACTED:canary]" in text and canary not in text and token not in text

    # The same archive, tampered with: a failed verify is announced too (one drill run for both).
    bundle = project.run_dirs()[0]
    (bundle / "record.json").write_text((bundle / "record.json").read_text().replace('"error"', '"passed"'))
    assert cli(project, "verify").code == 1
    verify = receiver.messages[-1]
    assert len(receiver.messages) == 2 and verify["title"] == "drillbook: evidence verification failed"
    assert f"failing check: {bundle.name}: modified: record.json" in str(verify["message"])
    assert f"evidence: {project.archive}" in str(verify["message"])


def test_an_overdue_entry_is_announced_once_per_missed_firing(project: Project, receiver: Receiver) -> None:
    _notifying_env(project, receiver.url)
    project.add_notebook("passes.ipynb")
    (project.root / "parameters" / "schedule.yaml").write_text(
        "runs:\n  - {drill: passes, env: local, cron: '0 0 1 1 *', grace: 1m}\n")
    first = cli(project, "run", "--due")
    assert first.code == 0 and "overdue: passes@local fired at" in first.stderr, first.output
    (message,) = receiver.messages  # then it ran and passed: nothing more to say
    body = str(message["message"])
    assert message["title"] == "drillbook: passes on local is overdue"
    assert "status: overdue" in body and "environment: local" in body and "last run finished: never" in body
    assert "failing check: no run followed the firing at " in body and "within 0:01:00" in body
    assert cli(project, "run", "--due").code == 0 and len(receiver.messages) == 1


def test_a_notify_target_must_be_a_secret_reference(project: Project, tmp_path: Path) -> None:
    project.write_env("local", "hosts:\n  here:\n    shell: local\nnotify:\n  - json://127.0.0.1:9/\n")
    project.add_notebook("passes.ipynb")
    result = cli(project, "run", "passes", "--env", "local")
    assert result.code == 2 and "not a secret reference" in result.stderr and project.run_dirs() == []
