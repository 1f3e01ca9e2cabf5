"""A real S3-compatible server on loopback for the tests: moto's server, on a free port.

moto's PutObject checks ``If-None-Match``/``If-Match`` and then stores the object in two steps
without a lock, so its threaded ``moto_server`` can let two conditional creates of one key both
succeed when they arrive at the same instant (real S3 cannot). The shared ledger is correct only
on a store whose conditional writes are atomic, so the tests serve moto's own application one
request at a time (werkzeug, ``threaded=False``): every request is then atomic, as on S3.

``s3_server`` starts it once per session; ``s3_archive`` gives each test a bucket of its own and
points boto3 at the server through the standard variables only (``AWS_ENDPOINT_URL_S3`` and
static credentials), as an operator would.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from labsupport import free_ports

SERVE = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
"""
START_WAIT = 60.0
AWS_VARIABLES = ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_SESSION_TOKEN",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def client_env(endpoint: str) -> dict[str, str]:
    """What a worker needs to reach the server: the standard AWS variables, nothing else."""
    return {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "drillbook-test",
            "AWS_SECRET_ACCESS_KEY": "drillbook-test", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true"}


def _import_moto() -> None:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        message = "moto[server] is not installed: run `make venv` (requirements.txt pins it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    _import_moto()
    import boto3

    port = free_ports(1)[0]
    log = tmp_path_factory.mktemp("s3") / "server.log"
    with open(log, "wb") as sink:
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(port)], stdout=sink, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="x", aws_secret_access_key="x",
                          region_name="us-east-1")
    deadline = time.monotonic() + START_WAIT
    while True:
        try:
            client.list_buckets()
            break
        except Exception:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the S3 server did not start: {Path(log).read_text()[-2000:]}")
            time.sleep(0.1)
    try:
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def s3_archive(s3_server: str) -> str:
    """A fresh bucket; boto3 (in this process and in drillbook subprocesses) points at the server."""
    import boto3

    for name in AWS_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(client_env(s3_server))  # conftest restores os.environ after the test
    bucket = f"drillbook-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/evidence"
