"""moto's S3 server with conditional writes made atomic, as S3's are.

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
import threading

from moto import server
from moto.s3.responses import S3Response

_conditional = threading.Lock()
_put_object = S3Response.put_object


@functools.wraps(_put_object)
def _atomic_put_object(self: S3Response, *args, **kwargs):
    if self.headers.get("If-None-Match") or self.headers.get("If-Match"):
        with _conditional:
            return _put_object(self, *args, **kwargs)
    return _put_object(self, *args, **kwargs)


S3Response.put_object = _atomic_put_object

if __name__ == "__main__":
    server.main()
