"""A moto server over HTTP, for code under test that builds its own boto3 clients from the environment."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from moto.server import ThreadedMotoServer

from standins.processes import free_port


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server on a free local port for the duration of the block; its URL."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
