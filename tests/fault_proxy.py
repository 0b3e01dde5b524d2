"""A fault-injecting HTTP proxy for the tests: it stands between the lake's S3 clients and
moto's server (tests/moto_server.py) and, at seeded points, does what a real S3 and a real
network sometimes do.

Every request whose method and path the proxy is told to watch gets a number, in the order
requests arrive; a ``FaultPlan`` says which numbers get which fault:

- ``slowdown``: answer 503 SlowDown with S3's XML error body (the request never reached S3);
- ``reset``: reset the connection (TCP RST) without forwarding;
- ``timeout``: hold the request past the client's timeout, then close without forwarding;
- ``lost_response`` (PUTs only): forward the request to S3, so the write lands, then reset
  the connection: the client never hears that it did;
- ``landed_500`` (PUTs only): forward the request, then answer 500 InternalError, as S3 rarely
  does for a write it applied: the client retries a write that is already there.

Every other request is forwarded as it came. Standard library only: a threading HTTP server,
one upstream connection per request.

    with FaultProxy(moto_endpoint, FaultPlan.sample(seed=1, methods=METHODS, points=100)) as proxy:
        ... S3Config(endpoint_url=proxy.endpoint, ...) ...
        proxy.stats()["fired"]  # fault -> how many were injected

    python tests/fault_proxy.py UPSTREAM PLAN_JSON   (what FaultProxy starts; prints its endpoint)
"""

from __future__ import annotations

import http.client
import json
import random
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

FAULTS = ("slowdown", "reset", "timeout", "lost_response", "landed_500")
AFTER_WRITE = ("lost_response", "landed_500")  # faults that let the request reach S3: PUTs only


def s3_error(code: str, message: str) -> bytes:
    """S3's XML error body."""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            "<RequestId>fault-proxy</RequestId></Error>").encode()


SLOWDOWN_BODY = s3_error("SlowDown", "Please reduce your request rate.")
INTERNAL_ERROR_BODY = s3_error("InternalError", "We encountered an internal error. Please try again.")
STATS_PATH = "/__fault_proxy__/stats"  # answered by the proxy itself: what it saw and did
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


@dataclass
class FaultPlan:
    """Which watched requests (numbered from 0 in arrival order) get which fault, and which
    requests are watched: ``methods`` (None: all) whose path matches ``paths`` (a regex)."""

    faults: dict[int, str] = field(default_factory=dict)
    methods: frozenset[str] | None = None
    paths: str = ""
    timeout_s: float = 3.0  # how long a ``timeout`` fault holds a request: past the client's timeout

    @classmethod
    def sample(cls, *, seed: int, methods: list[str], points: int, kinds: tuple[str, ...] = FAULTS,
               **watch) -> FaultPlan:
        """``points`` fault points among the watched requests of a fault-free run (``methods``:
        the method of each, as ``FaultProxy.stats`` gives them), drawn by ``random.Random(seed)``:
        a quarter on PUTs (as many as there are, at most), each of the ``AFTER_WRITE`` kinds, the
        rest on other requests, each of the other ``kinds``. Retries shift the numbers of a faulty
        run: an ``AFTER_WRITE`` fault that meets a request other than a PUT waits for the next PUT."""
        rng = random.Random(seed)
        puts = [n for n, method in enumerate(methods) if method == "PUT"]
        others = [n for n, method in enumerate(methods) if method != "PUT"]
        after = tuple(k for k in kinds if k in AFTER_WRITE)
        on_puts = rng.sample(puts, min(len(puts), points // 4)) if after else []
        faults = {n: rng.choice(after) for n in on_puts}
        before = tuple(k for k in kinds if k not in AFTER_WRITE)
        return cls(faults | {n: rng.choice(before) for n in rng.sample(others, points - len(faults))}, **watch)

    def watches(self, method: str, path: str) -> bool:
        return (self.methods is None or method in self.methods) and re.search(self.paths, path) is not None


class FaultProxy:
    """The proxy, in a process of its own on a free loopback port, forwarding to ``upstream``
    (``http://host:port``). A process of its own, as moto's server: delta-rs holds the GIL in
    some calls (``DeltaTable.history``), so a proxy thread in the caller's process would stall."""

    def __init__(self, upstream: str, plan: FaultPlan | None = None):
        self.upstream = upstream
        self.plan = plan or FaultPlan()
        self._process: subprocess.Popen | None = None
        self.endpoint = ""

    def __enter__(self) -> FaultProxy:
        plan = json.dumps(asdict(self.plan) | {"methods": sorted(self.plan.methods or []) or None})
        self._process = subprocess.Popen([sys.executable, __file__, self.upstream, plan], stdout=subprocess.PIPE,
                                         text=True)
        self.endpoint = self._process.stdout.readline().strip()  # the child prints it once it listens
        if not self.endpoint:
            raise RuntimeError("the fault proxy did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._process.terminate()
        self._process.wait(timeout=30)

    def stats(self) -> dict:
        """What the proxy saw: ``watched`` (requests numbered) and ``methods`` (of each), ``fired``
        (fault -> how many were injected) and ``log`` ([number, method, path, fault] of each)."""
        with urllib.request.urlopen(f"{self.endpoint}{STATS_PATH}", timeout=30) as answer:
            return json.loads(answer.read())


class _Faults:
    """The proxy process's state: the plan, and the numbering of watched requests."""

    def __init__(self, upstream: str, plan: FaultPlan):
        self.upstream = urlparse(upstream).netloc
        self.plan = plan
        self.watched = 0
        self.methods: list[str] = []  # of each watched request
        self.fired: Counter[str] = Counter()
        self.log: list[tuple[int, str, str, str]] = []
        self.deferred: list[str] = []  # AFTER_WRITE faults drawn for requests that were not PUTs
        self._lock = threading.Lock()

    def fault_for(self, method: str, path: str) -> str | None:
        """The fault this request gets (None: forward it), counting it if it is watched."""
        if not self.plan.watches(method, path):
            return None
        with self._lock:
            number, self.watched = self.watched, self.watched + 1
            self.methods.append(method)
            fault = self.plan.faults.get(number)
            if fault in AFTER_WRITE and method != "PUT":
                self.deferred.append(fault)
                fault = None
            elif fault is None and method == "PUT" and self.deferred:
                fault = self.deferred.pop(0)
            if fault:
                self.fired[fault] += 1
                self.log.append((number, method, path, fault))
        return fault

    def stats(self) -> bytes:
        with self._lock:
            return json.dumps({"watched": self.watched, "methods": self.methods, "fired": self.fired,
                               "log": self.log}).encode()


def _handler_for(proxy: _Faults) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, *args) -> None:  # quiet: the test reports what was injected
            pass

        def handle_one(self) -> None:
            body = _read_body(self)
            if self.path == STATS_PATH:
                self._respond(200, {"Content-Type": "application/json"}, proxy.stats())
                return
            fault = proxy.fault_for(self.command, self.path)
            if fault == "slowdown":
                self._respond(503, {"Content-Type": "application/xml"}, SLOWDOWN_BODY)
            elif fault == "reset":
                self._reset()
            elif fault == "timeout":
                time.sleep(proxy.plan.timeout_s)
                self._reset()
            else:
                status, headers, answer = self._forward(body)
                if fault == "lost_response":
                    self._reset()
                elif fault == "landed_500":
                    self._respond(500, {"Content-Type": "application/xml"}, INTERNAL_ERROR_BODY)
                else:
                    self._respond(status, headers, answer)

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = handle_one

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                upstream.close()

        def _respond(self, status: int, headers, body: bytes) -> None:
            self.send_response_only(status)
            items = headers.items() if isinstance(headers, dict) else headers
            for name, value in items:
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            length = dict((k.lower(), v) for k, v in items).get("content-length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            self.wfile.flush()

        def _reset(self) -> None:
            """Close the connection with a TCP reset, as a dropped connection looks to the client."""
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()

    return Handler


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request's body, whole: by its Content-Length, or its chunks decoded."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                while handler.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _serve(upstream: str, plan_json: str) -> None:
    raw = json.loads(plan_json)
    plan = FaultPlan({int(n): f for n, f in raw["faults"].items()},
                     frozenset(raw["methods"]) if raw["methods"] else None, raw["paths"], raw["timeout_s"])
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(_Faults(upstream, plan)))
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2])
