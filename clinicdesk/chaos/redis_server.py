"""Debian's `redis-server` on loopback, for the scale-out runs: started with a temporary
directory and no persistence, stopped at the end. `RedisUnavailable` when the binary is
missing (`apt-get install redis-server`; `.ci/run` installs it)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

INSTALL_HINT = "redis-server is not installed (apt-get install redis-server)"


class RedisUnavailable(RuntimeError):
    pass


def _pong(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(port: int) -> Iterator[str]:
    """A fresh Redis on 127.0.0.1:`port`; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RedisUnavailable(INSTALL_HINT)
    if _pong(port):
        raise RedisUnavailable(f"something already answers on 127.0.0.1:{port}")
    with tempfile.TemporaryDirectory(prefix="clinicdesk-redis-") as directory:
        process = subprocess.Popen(
            [
                binary,
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--dir", directory,
                "--save", "",
                "--appendonly", "no",
                "--protected-mode", "yes",
                "--daemonize", "no",
                "--loglevel", "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 10
            while not _pong(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RedisUnavailable(f"redis-server did not start on port {port}")
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def enqueue(redis_url: str, func: str, **kwargs) -> str:
    """Queue a job on the Redis broker at `redis_url`, whatever this process's own broker
    is (the clusters read REDIS_URL; the process that queues may not have it set)."""
    import redis
    from django_q.brokers.redis_broker import Redis
    from django_q.tasks import async_task

    class _Broker(Redis):
        def get_connection(self, list_key: str | None = None):
            return redis.from_url(redis_url)

    return async_task(func, broker=_Broker(), **kwargs)
