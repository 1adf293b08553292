"""A real S3 API server on loopback (moto's), made faithful where our stores depend on it.

S3 applies a conditional write (``If-None-Match: *``, ``If-Match``) atomically: of two
concurrent creators, exactly one wins. moto's server checks the condition and then writes, on
one thread per request, so under load two creators can both win (seen in CI: 2 of 150 contested
keys had two winners). The region store's ledger lock relies on that atomicity, so this server
handles one request at a time, which restores it. Everything else is moto's own S3 API.
"""

from __future__ import annotations

import logging
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


class _OneRequestAtATime:
    """WSGI middleware: the whole request, body included, runs under one lock. With a ``log``, it
    records who asked for which bucket: (access key id, method, bucket)."""

    def __init__(self, app, log: list[tuple[str, str, str]] | None):
        self.app, self.lock, self.log = app, threading.Lock(), log

    def __call__(self, environ, start_response):
        if self.log is not None:
            credential = re.search(r"Credential=([^/]+)/", environ.get("HTTP_AUTHORIZATION", ""))
            bucket = environ.get("PATH_INFO", "/").lstrip("/").split("/", 1)[0]
            self.log.append((credential[1] if credential else "", environ["REQUEST_METHOD"], bucket))
        with self.lock:
            return list(self.app(environ, start_response))


class SerialisedMotoServer(ThreadedMotoServer):
    def __init__(self, *args, log: list[tuple[str, str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = log

    def _server_entry(self) -> None:
        app = _OneRequestAtATime(DomainDispatcherApplication(create_backend_app), self.log)
        self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
        self._server_ready_event.set()
        self._server.serve_forever()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def s3_api_server(log: list[tuple[str, str, str]] | None = None) -> Iterator[str]:
    """Start the server on a free loopback port; yields its endpoint URL. It accepts any credentials
    (``CREDENTIALS`` are what the tests give boto3); ``log`` collects who asked for which bucket.
    Its per-request access log is silenced."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = SerialisedMotoServer(ip_address="127.0.0.1", port=port, verbose=False, log=log)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
