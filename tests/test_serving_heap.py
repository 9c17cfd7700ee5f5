"""Under gunicorn as the Procfile runs it, a worker's garbage collector never walks the heap
loaded before the fork: a full collection of it held the GIL for 70–140 ms, and every request
of the worker waited (gateway/web/gunicorn_hooks.py)."""
from __future__ import annotations

import urllib.request

from tests.gunicorn_support import gunicorn_as_in_the_procfile
from tests.test_slow_clients import signed_call

#: The gateway's preloaded heap is some 120,000 objects; a worker that froze nothing reports 0.
PRELOADED_OBJECTS_AT_LEAST = 50_000


def test_workers_leave_the_preloaded_heap_out_of_garbage_collection_and_still_answer_calls(tmp_path, config_path):
    with gunicorn_as_in_the_procfile(tmp_path, config_path, app="tests.gc_probe:app") as (base, _port):
        status, _seconds = signed_call(base, "CA" + "7" * 32)
        with urllib.request.urlopen(f"{base}/gc-frozen", timeout=5) as answer:
            frozen = int(answer.read())
    assert status == 200
    assert frozen >= PRELOADED_OBJECTS_AT_LEAST
