"""gunicorn's server hooks, loaded by the Procfile's `--config python:gateway.web.gunicorn_hooks`.

The heap the app loads before the workers fork (`--preload`: Flask, SQLAlchemy, pydantic, twilio,
the config) is some 120,000 objects that live as long as the process. CPython's full
collection walks all of them: 70–140 ms with the GIL held, during which every request of the
worker waits. Under load a worker ran one every few seconds, which showed in the webhooks' p99
(docs/performance.md). `gc.freeze()` moves them out of the collector's sight just before each
fork, as CPython's documentation advises for pre-forking servers; a full collection then walks
only what the worker made itself. Frozen objects are never freed, which costs nothing for
objects that live as long as the process anyway, and the workers share their pages longer
because the collector no longer writes to them.
"""
from __future__ import annotations

import gc


def pre_fork(_server, _worker) -> None:
    gc.freeze()
