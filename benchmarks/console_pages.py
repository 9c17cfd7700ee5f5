"""The console's conversation pages and overview with many stored conversations (SQLite).

Run by hand (never by the test suite), from the project folder:

    .venv/bin/python benchmarks/console_pages.py [--size 200000]

Fills a fresh SQLite database as benchmarks/lookup.py does (one call a second from 2025-01-01,
half of them in another project), signs in to the console through the real app (Flask's test
client: no network) and prints the median time of: the newest page, a page deep in the
history (keyset cursor), the search box with a shared_id, with a phone number nobody called
from, and with the project's own number, and the overview of the busiest day.
"""
from __future__ import annotations

import argparse
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

from werkzeug.security import generate_password_hash

from gateway import create_app
from gateway.settings import Settings
from lookup import fill, timed, write_config

PASSWORD = "benchmark"


def signed_in_client(app):
    client = app.test_client()
    client.get("/console/login")
    with client.session_transaction("/console/") as session:
        session["csrf_token"] = "benchmark-csrf"
    response = client.post("/console/login", data={"password": PASSWORD, "csrf_token": "benchmark-csrf"})
    assert response.status_code == 302, response.text
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--iterations", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gateway-console-") as tmp:
        folder = Path(tmp)
        settings = Settings(
            _env_file=None, database_url=f"sqlite:///{folder / 'console.db'}", config_path=write_config(folder),
            twilio_account_sid="AC" + "0" * 32, twilio_auth_token="benchmark-token",
            console_password_hash=generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000"),
        )
        app = create_app(settings)
        fill(app.extensions["gateway"].engine, args.size)
        client = signed_in_client(app)
        middle = args.size // 2 - args.size // 2 % 2  # an ACME row halfway through the history
        deep = (datetime(2025, 1, 1) + timedelta(seconds=middle)).isoformat() + "+00:00"
        cases = {
            "newest page": ("/console/conversations", {}, 200),
            "a page halfway back": ("/console/conversations", {"before": f"{deep}~ffffffff"}, 200),
            "find a shared_id": ("/console/conversations", {"q": f"crm-{middle}"}, 302),
            "find an unknown caller": ("/console/conversations", {"q": "(212) 555-0000"}, 200),
            "find the number called": ("/console/conversations", {"q": "(415) 555-0199"}, 200),
            "find a caller of every call": ("/console/conversations", {"q": "(415) 555-1234"}, 200),
            "overview of the busiest day": ("/console/overview", {"day": "2025-01-01"}, 200),
        }
        print(f"{args.size} conversations stored; medians of {args.iterations} requests")
        for name, (path, query, status) in cases.items():

            def request(path=path, query=query, status=status):
                response = client.get(path, query_string=query)
                assert response.status_code == status, (name, response.status_code)

            print(f"{name:>30} {timed(request, args.iterations) * 1e3:>9.1f} ms")
        app.extensions["gateway"].engine.dispose()


if __name__ == "__main__":
    main()
