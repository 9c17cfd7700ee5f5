"""The gateway behind a probe of its worker's garbage collector, for tests/test_serving_heap.py."""
from __future__ import annotations

import gc

from app import app as gateway


def app(environ, start_response):
    """`GET /gc-frozen`: how many objects this worker's collector never walks; else the gateway."""
    if environ.get("PATH_INFO") == "/gc-frozen":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(gc.get_freeze_count()).encode()]
    return gateway(environ, start_response)
