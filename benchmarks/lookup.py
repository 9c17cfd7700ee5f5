"""Handoff API lookup by shared_id at 10k and at 1M stored conversations (SQLite).

Run by hand (never by the test suite), from the project folder:

    .venv/bin/python benchmarks/lookup.py

For each size, fills a fresh SQLite database (bulk executemany, one history event per
conversation, two projects), then times GET /v1/{account}/{project}/handoff_state?shared_id=…
through the real app (Flask's test client: no network) and the store function alone, on random
existing shared_ids, and prints the medians and their ratio between sizes.
"""
from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from gateway import create_app
from gateway.storage import store
from gateway.storage.models import Conversation, HandoffEvent
from gateway.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "benchmark-api-key-" + uuid.uuid4().hex
ACME, GLOBEX = "ws-acme/PROJECT-frontdesk", "ws-globex/PROJECT-support"


def write_config(folder: Path) -> Path:
    """The example config, with a known API key for the first project."""
    digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    text = (ROOT / "gateway.example.toml").read_text()
    text = text.replace('project_id = "PROJECT-frontdesk"', f'project_id = "PROJECT-frontdesk"\napi_key_sha256 = ["{digest}"]', 1)
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def fill(engine, count: int, batch: int = 100_000) -> None:
    """`count` voice conversations, every other one in another project, each with one event.

    Rows go straight to sqlite3's executemany (the ORM would take minutes for a million), with
    timestamps in the text form SQLAlchemy stores on SQLite.
    """
    start = datetime(2025, 1, 1)
    conversation_columns = [column.name for column in Conversation.__table__.columns]
    event_columns = [column.name for column in HandoffEvent.__table__.columns if column.name != "id"]

    def insert(table: str, columns: list[str]) -> str:
        return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"

    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        for first in range(0, count, batch):
            rows, history = [], []
            for i in range(first, min(first + batch, count)):
                at = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.%f")
                conversation_id = str(uuid.UUID(int=i))
                values = dict(
                    id=conversation_id, project_key=ACME if i % 2 == 0 else GLOBEX, channel="voice",
                    call_sid=f"CA{i:032x}", shared_id=f"crm-{i}", from_number="+14155551234",
                    to_number="+14155550199", state="handoff_initiated", topic=None, destination="Front desk",
                    reason="needs_human", utterance=None, data="{}", attempts=1, call_status=None,
                    status_sequence=None, duration_seconds=None, started_at=at, updated_at=at, ended_at=None,
                )
                rows.append(tuple(values[name] for name in conversation_columns))
                event = dict(conversation_id=conversation_id, state="handoff_initiated", destination="Front desk",
                             detail=None, dedupe_key="call:first-attempt", at=at)
                history.append(tuple(event[name] for name in event_columns))
            cursor.executemany(insert("conversations", conversation_columns), rows)
            cursor.executemany(insert("handoff_events", event_columns), history)
        connection.commit()
    finally:
        connection.close()


def timed(function, iterations: int) -> float:
    """Median seconds of `function()` over `iterations` calls."""
    samples = []
    for _ in range(iterations):
        began = time.perf_counter()
        function()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def measure(size: int, iterations: int, folder: Path) -> tuple[float, float]:
    settings = Settings(
        _env_file=None, database_url=f"sqlite:///{folder / f'lookup-{size}.db'}", config_path=write_config(folder),
        twilio_account_sid="AC" + "0" * 32, twilio_auth_token="benchmark-token",
    )
    app = create_app(settings)
    engine = app.extensions["gateway"].engine
    began = time.perf_counter()
    fill(engine, size)
    print(f"{size:>9} conversations stored in {time.perf_counter() - began:.1f} s")
    client = app.test_client()
    wanted = [f"crm-{2 * random.randrange(size // 2)}" for _ in range(iterations)]
    picks = iter(wanted * 2)

    def through_api():
        response = client.get(f"/v1/{ACME}/handoff_state", query_string={"shared_id": next(picks)},
                              headers={"x-api-key": API_KEY})
        assert response.status_code == 200, response.text

    with Session(engine) as session:
        store_picks = iter(wanted)

        def through_store():
            assert store.find_conversation(session, ACME, shared_id=next(store_picks)) is not None

        api_median = timed(through_api, iterations)
        store_median = timed(through_store, iterations)
    engine.dispose()
    return api_median, store_median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--iterations", type=int, default=3_000)
    args = parser.parse_args()
    random.seed(6)
    with tempfile.TemporaryDirectory(prefix="gateway-lookup-") as tmp:
        results = {size: measure(size, args.iterations, Path(tmp)) for size in (args.small, args.large)}
    print(f"{'conversations':>13} {'API median ms':>14} {'store median ms':>16}")
    for size, (api_median, store_median) in results.items():
        print(f"{size:>13} {api_median * 1e3:>14.3f} {store_median * 1e3:>16.3f}")
    (small_api, small_store), (large_api, large_store) = results[args.small], results[args.large]
    print(f"{'ratio':>13} {large_api / small_api:>14.2f} {large_store / small_store:>16.2f}")
    print(f"target: {args.large} within 1.5x of {args.small}: {'met' if large_api / small_api <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
