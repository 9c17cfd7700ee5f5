"""Signed /voice/call throughput of the gateway against a bare Flask app, both under gunicorn.

Run by hand (never by the test suite), from the project folder:

    .venv/bin/python benchmarks/webhook_throughput.py

Every app gets the same gunicorn (same workers, loopback only) and the same load from `wrk`
(Debian package `wrk`): CONNECTIONS concurrent connections for DURATION seconds, each request a
Twilio-signed inbound-call form with its own CallSid, precomputed before the clock starts.
The gateway runs on SQLite in a temporary folder with the example config. The sketch
(benchmarks/sketch_app.py: signature check, one SQLite insert, fixed TwiML) is measured too,
as the yardstick of what this machine allows any design that checks and stores each call.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "benchmark-auth-token-" + uuid.uuid4().hex
ACCOUNT_SID = "AC" + "0" * 32
CALLED = "+14155550199"  # "Front desk" in gateway.example.toml

WRK_SCRIPT = r"""
local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  requests, counter = {}, 1
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == id then
      local signature, body = line:match("([^\t]*)\t(.*)")
      requests[#requests + 1] = wrk.format("POST", "/voice/call", {
        ["X-Twilio-Signature"] = signature,
        ["Content-Type"] = "application/x-www-form-urlencoded",
      }, body)
    end
    i = i + 1
  end
end
function request()
  local r = requests[counter]
  counter = counter % #requests + 1
  return r
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_requests(path: Path, url: str, count: int, prefix: str) -> None:
    """`count` signed forms, one per line, each with a CallSid never used before.

    A CallSid is CA and 32 hex digits (the gateway refuses anything else): an 8-digit prefix, 24 more.
    """
    validator = RequestValidator(AUTH_TOKEN)
    with path.open("w") as out:
        for i in range(count):
            params = {
                "CallSid": f"CA{prefix}{i:024x}",
                "AccountSid": ACCOUNT_SID,
                "From": "+14155551234",
                "Caller": "+14155551234",
                "To": CALLED,
                "Called": CALLED,
                "CallStatus": "ringing",
                "ApiVersion": "2010-04-01",
                "Direction": "inbound",
            }
            out.write(f"{validator.compute_signature(url, params)}\t{urlencode(params)}\n")


def start(app: str, port: int, workers: int, env: dict, log: Path) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "gunicorn", app, "--preload", "--workers", str(workers),
        "--worker-class", "gthread", "--threads", "32",  # as the Procfile serves it (docs/serving.md)
        "--bind", f"127.0.0.1:{port}", "--timeout", "20", "--log-level", "warning",
    ]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                sys.exit(f"{app} did not start; see {log}")
            time.sleep(0.2)
    process.terminate()
    sys.exit(f"{app} did not answer /healthz within 30 s; see {log}")


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(port: int, requests_file: Path, script: Path, args, seconds: int) -> dict:
    output = subprocess.run(
        ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency", "--timeout", "15s",
         "-s", str(script), f"http://127.0.0.1:{port}/voice/call", "--", str(requests_file), str(args.threads)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout

    def latency(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return float(value) * UNITS[unit]

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "requests": int(re.search(r"(\d+) requests in", output).group(1)),
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50": latency("50"),
        "p99": latency("99"),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": socket_errors.group(1) if socket_errors else "none",
    }


def measure(name: str, app: str, env: dict, args, folder: Path, script: Path) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}/voice/call"
    warmup, measured = folder / f"{name}-warmup.txt", folder / f"{name}-requests.txt"
    write_requests(warmup, url, 20_000, "ffffffff")
    write_requests(measured, url, args.requests, "00000000")
    process = start(app, port, args.workers, env, folder / f"{name}.log")
    try:
        run_wrk(port, warmup, script, args, 2)
        result = run_wrk(port, measured, script, args, args.duration)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if result["requests"] > args.requests:
        print(f"warning: {name} served {result['requests']} requests, more than the {args.requests} "
              "unique CallSids prepared; raise --requests", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gunicorn workers (both apps)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent requests")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--duration", type=int, default=15, help="seconds of measured load per app")
    parser.add_argument("--requests", type=int, default=200_000, help="unique signed requests prepared per app")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        folder = Path(tmp)
        script = folder / "signed.lua"
        script.write_text(WRK_SCRIPT)
        database = folder / "gateway.db"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_"))}
        gateway_env = {
            **env,
            "GATEWAY_CONFIG": str(ROOT / "gateway.example.toml"),
            "GATEWAY_DATABASE_URL": f"sqlite:///{database}",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        }
        sketch_env = {**env, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "SKETCH_DATABASE": str(folder / "sketch.db")}
        bare = measure("bare", "benchmarks.bare_app:app", env, args, folder, script)
        sketch = measure("sketch", "benchmarks.sketch_app:app", sketch_env, args, folder, script)
        gateway = measure("gateway", "app:app", gateway_env, args, folder, script)
        with sqlite3.connect(database) as connection:
            stored = connection.execute("SELECT count(*) FROM conversations").fetchone()[0]

    print(f"gunicorn --workers {args.workers} --worker-class gthread --threads 32, "
          f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {os.cpu_count()} CPUs")
    print(f"{'':10} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9} {'non-2xx':>8}")
    for name, result in (("bare", bare), ("sketch", sketch), ("gateway", gateway)):
        print(f"{name:10} {result['rps']:>10.1f} {result['p50']:>9.2f} {result['p99']:>9.2f} {result['non_2xx']:>8}"
              f"   socket errors: {result['socket_errors']}")
    for name, result in (("sketch", sketch), ("gateway", gateway)):
        print(f"{name + '/bare':14} {result['rps'] / bare['rps']:>6.2f} {result['p50'] / bare['p50']:>9.2f} "
              f"{result['p99'] / bare['p99']:>9.2f}")
    print(f"conversations stored by the gateway: {stored} (warm-up included)")
    print(f"targets: throughput ratio >= 0.70: {'met' if gateway['rps'] / bare['rps'] >= 0.7 else 'MISSED'}; "
          f"p99 ratio <= 1.5: {'met' if gateway['p99'] / bare['p99'] <= 1.5 else 'MISSED'}")


if __name__ == "__main__":
    main()
