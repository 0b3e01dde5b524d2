"""moto's S3 server with conditional writes made atomic, as S3's are, and ``start``,
which runs it in a process of its own (the tests' fixture and bench_s3.py use it).

moto checks ``If-None-Match: *`` / ``If-Match`` and then stores the object in two
steps of a threaded server, so two concurrent conditional PUTs of the same key can
both succeed (seen: two writers both committed the same Delta log version under
load, and one commit was lost). S3 guarantees that only one does, and delta-rs's
``conditional_put: etag`` relies on it. Here the check and the store run under one
lock; unconditional requests are untouched.

    python tests/moto_server.py -H 127.0.0.1 -p PORT   (moto.server's arguments)
"""

from __future__ import annotations

import functools
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def start(log: Path, timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """This server on a free loopback port, its output in ``log``: (process, endpoint URL)
    once it listens. A process of its own: delta-rs holds the GIL in some calls, so a
    server thread in the caller's process could not answer them."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, __file__, "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"moto's server exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(
                    f"moto's server did not listen on {port} in {timeout:.0f} s: {log.read_text()}"
                ) from None
            time.sleep(0.1)


def _serve() -> None:
    from moto import server
    from moto.s3.responses import S3Response

    conditional = threading.Lock()
    put_object = S3Response.put_object

    @functools.wraps(put_object)
    def atomic_put_object(self: S3Response, *args, **kwargs):
        if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
            with conditional:
                return put_object(self, *args, **kwargs)
        return put_object(self, *args, **kwargs)

    S3Response.put_object = atomic_put_object
    server.main()


if __name__ == "__main__":
    _serve()
