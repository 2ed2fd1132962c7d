"""Fixtures for ``tasks/`` tests: a real S3 endpoint on loopback (moto's server) and buckets."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

_S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would send requests elsewhere or sign them differently: unset for the session.
_S3_ENV_CLEARED = ("AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_PROFILE")


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint (moto's threaded server on 127.0.0.1, a free port) for the session.

    Sets ``AWS_ENDPOINT_URL`` and test credentials in ``os.environ`` while it lives (restored
    afterwards) and yields the endpoint URL.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    names = ("AWS_ENDPOINT_URL", *_S3_ENV, *_S3_ENV_CLEARED)
    saved = {name: os.environ.get(name) for name in names}
    try:
        for name in _S3_ENV_CLEARED:
            os.environ.pop(name, None)
        os.environ.update(_S3_ENV, AWS_ENDPOINT_URL=endpoint)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh, empty bucket on the session's S3 endpoint, as ``s3://<name>``."""
    from tasks import storage

    url = f"s3://radtrace-test-{uuid.uuid4().hex[:12]}"
    storage.create_bucket(url)
    return url
