"""CPU per `POST /voice/call` in-process: the gateway's own work, without an HTTP server or load.

    .venv/bin/python benchmarks/call_path_cpu.py              # ms of CPU per call
    .venv/bin/python benchmarks/call_path_cpu.py --profile    # and where it goes (cProfile)

Builds the app with `create_app(Settings(...))` on a fresh SQLite file in a temporary folder
and gateway.example.toml, then calls its WSGI callable with pre-signed environs: 200 calls of
warm-up, then --calls more, one at a time (so each commit group holds one call). Prometheus
counts in multiprocess mode, as under the Procfile. cProfile roughly doubles Python's share, so
read --profile for where the time goes, not for how much. Under load, server CPU per call is
what benchmarks/webhook_throughput.py measures.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from twilio.request_validator import RequestValidator  # noqa: E402

AUTH_TOKEN = "0" * 32
ACCOUNT_SID = "AC" + "a" * 32
CALLED = "+14155550199"  # a number of gateway.example.toml
URL = "http://localhost:8000/voice/call"


def signed_environs(count: int, prefix: str) -> list[dict]:
    validator = RequestValidator(AUTH_TOKEN)
    environs = []
    for number in range(count):
        form = {
            "CallSid": f"CA{prefix}{number:024x}", "AccountSid": ACCOUNT_SID, "From": "+14155551234", "To": CALLED,
            "Caller": "+14155551234", "Called": CALLED, "CallStatus": "ringing", "ApiVersion": "2010-04-01",
            "Direction": "inbound",
        }
        body = urlencode(form).encode()
        environs.append({
            "REQUEST_METHOD": "POST", "PATH_INFO": "/voice/call", "QUERY_STRING": "", "SERVER_NAME": "localhost",
            "SERVER_PORT": "8000", "HTTP_HOST": "localhost:8000", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_TYPE": "application/x-www-form-urlencoded", "CONTENT_LENGTH": str(len(body)), "body": body,
            "HTTP_X_TWILIO_SIGNATURE": validator.compute_signature(URL, form), "wsgi.errors": sys.stderr,
        })
    return environs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000, help="measured calls")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions by cumulative time")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="gateway-cpu-"))
    (folder / "metrics").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder / "metrics")

    from gateway import create_app
    from gateway.settings import Settings

    settings = Settings(
        _env_file=None, config_path=str(ROOT / "gateway.example.toml"), database_url=f"sqlite:///{folder / 'gateway.db'}",
        spool_dir=str(folder / "spool"), twilio_auth_token=AUTH_TOKEN, twilio_account_sid=ACCOUNT_SID,
    )
    wsgi = create_app(settings).wsgi_app

    def answered(status, _headers):
        if not status.startswith("200"):
            sys.exit(f"a call was answered {status}")

    def place(environs):
        for environ in environs:
            environ = dict(environ, **{"wsgi.input": io.BytesIO(environ["body"])})
            b"".join(wsgi(environ, answered))

    place(signed_environs(200, "f0000000"))
    measured = signed_environs(args.calls, "00000001")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(place, measured)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(40)
        return
    started = time.process_time()
    place(measured)
    print(f"{(time.process_time() - started) * 1000 / args.calls:.3f} ms of CPU per call ({args.calls} calls)")


if __name__ == "__main__":
    main()
