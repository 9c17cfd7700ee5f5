"""Signed /voice/call throughput of the gateway beside a bare Flask app and the issue's sketch.

Run by hand (never by the test suite), from the project folder:

    .venv/bin/python benchmarks/webhook_throughput.py
    .venv/bin/python benchmarks/webhook_throughput.py --database-url postgresql://postgres@127.0.0.1:5432/test

Each app is started exactly as the Procfile's `web:` line starts the gateway (its gunicorn
flags, PROMETHEUS_MULTIPROC_DIR, and for the gateway the spool), with only the WSGI app and
the port swapped, each in a temporary folder of its own. The machine is shared, so absolute
figures mean little: the apps are measured in interleaved rounds (bare, sketch, gateway,
bare, …), each with a warm-up, under the same `wrk -t1 -c32` (one load thread: the server
needs the other core), every request a Twilio-signed inbound-call form with a CallSid never
sent before. Server CPU per request is read from the gunicorn workers' /proc times. The
median round's ratios to the bare app are held against the targets of docs/performance.md.

With --database-url the gateway stores on PostgreSQL, in a database made for the run and
dropped after it (the URL names the server and an existing database to connect to first).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
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
APPS = {"bare": "benchmarks.bare_app:app", "sketch": "benchmarks.sketch_app:app", "gateway": "app:app"}
TARGETS = {"throughput": 0.45, "p99": 2.5, "cpu_ms": 1.2}

WRK_SCRIPT = r"""
function init(args)
  requests, counter = {}, 1
  for line in io.lines(args[1]) do
    local signature, body = line:match("([^\t]*)\t(.*)")
    requests[#requests + 1] = wrk.format("POST", "/voice/call", {
      ["X-Twilio-Signature"] = signature,
      ["Content-Type"] = "application/x-www-form-urlencoded",
    }, body)
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
    """`count` signed forms, one per line; a CallSid is CA and 32 hex digits, `prefix` the first 8."""
    validator = RequestValidator(AUTH_TOKEN)
    with path.open("w") as out:
        for i in range(count):
            params = {
                "CallSid": f"CA{prefix}{i:024x}",
                "AccountSid": ACCOUNT_SID,
                "From": "+14155551234",
                "To": CALLED,
                "Caller": "+14155551234",  # Twilio sends the twins of From and To; the gateway refuses forms without them
                "Called": CALLED,
                "CallStatus": "ringing",
                "ApiVersion": "2010-04-01",
                "Direction": "inbound",
            }
            out.write(f"{validator.compute_signature(url, params)}\t{urlencode(params)}\n")


def procfile_command(app: str, port: int) -> str:
    """The Procfile's web line with another app and a loopback port: the same server for every app."""
    line = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = line.removeprefix("web:").strip()
    if "app:app" not in command:
        sys.exit("the Procfile's web line does not serve app:app; update benchmarks/webhook_throughput.py")
    return command.replace("app:app", app).replace("0.0.0.0", "127.0.0.1").replace("--timeout", "--log-level warning --timeout")


def start(name: str, port: int, env: dict, log: Path) -> subprocess.Popen:
    command = procfile_command(APPS.get(name, APPS["gateway"]), port)
    process = subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, env={**env, "PORT": str(port)}, stdout=log.open("w"), stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return process
        except OSError:
            if process.poll() is not None:
                sys.exit(f"{name} did not start; see {log}:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
    process.terminate()
    sys.exit(f"{name} did not answer /healthz within 30 s; see {log}")


def worker_cpu_seconds(master: int) -> float:
    """User + system CPU of the master's children (the gunicorn workers), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == master:  # ppid
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def run_wrk(port: int, requests_file: Path, script: Path, connections: int, seconds: int) -> dict:
    output = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "15s",
         "-s", str(script), f"http://127.0.0.1:{port}/voice/call", "--", str(requests_file)],
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


def measure(name: str, app_number: int, round_number: int, env: dict, args, folder: Path, script: Path) -> dict:
    """One round of one app: start it, warm it up, load it, stop it.

    Its CallSids are its own in the run: the gateway's variants share one PostgreSQL database,
    where another app's CallSids would all be Twilio retries, not new calls.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}/voice/call"
    warmup, measured = folder / "warmup.txt", folder / f"requests-{round_number}.txt"
    write_requests(warmup, url, 5_000, f"f{app_number:01x}{round_number:06x}")
    write_requests(measured, url, args.requests, f"{app_number:02x}{round_number:06x}")
    process = start(name, port, env, folder / f"{name}-{round_number}.log")
    try:
        run_wrk(port, warmup, script, args.connections, args.warmup)
        cpu_before = worker_cpu_seconds(process.pid)
        result = run_wrk(port, measured, script, args.connections, args.duration)
        result["cpu_ms"] = (worker_cpu_seconds(process.pid) - cpu_before) * 1000 / max(result["requests"], 1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    if result["requests"] > args.requests:
        print(f"warning: {name} served {result['requests']} requests, more than the {args.requests} "
              "unique CallSids prepared; raise --requests", file=sys.stderr)
    return result


def postgres_database(url: str):
    """A database of the run's own on the server `url` names: (its URL, a function that drops it)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(url).set(drivername="postgresql+psycopg")
    name = f"gateway_bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return server.set(database=name).render_as_string(hide_password=False), drop


def app_environment(name: str, folder: Path, base: dict, database_url: str | None) -> dict:
    """What the Procfile gives each app: its own metrics folder; for the gateway, its config, database and spool."""
    (folder / name).mkdir()
    env = {**base, "PROMETHEUS_MULTIPROC_DIR": str(folder / name / "metrics"), "TWILIO_AUTH_TOKEN": AUTH_TOKEN}
    if name == "sketch":
        env["SKETCH_DATABASE"] = str(folder / name / "sketch.db")
    if name.startswith("gateway"):
        env.update(
            GATEWAY_CONFIG=str(ROOT / "gateway.example.toml"),
            GATEWAY_DATABASE_URL=database_url or f"sqlite:///{folder / name / 'gateway.db'}",
            GATEWAY_SPOOL_DIR=str(folder / name / "spool"),
            TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        )
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every app (at least 3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent requests (wrk -c)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of measured load per app and round")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up load before each measurement")
    parser.add_argument("--requests", type=int, default=100_000, help="unique signed requests prepared per round")
    parser.add_argument("--database-url", help="store the gateway's calls on this PostgreSQL server instead of SQLite")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME:KEY=VALUE[,KEY=VALUE]",
                        help="also measure the gateway under these settings, as gateway-NAME, in the same rounds "
                        "(e.g. short:GATEWAY_DATABASE_BUSY_TIMEOUT=2)")
    args = parser.parse_args()
    if args.rounds < 3:
        sys.exit("--rounds must be at least 3: one round tells nothing on a shared machine")
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    base = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "TWILIO_", "PROMETHEUS_", "WEB_"))}
    # The Procfile runs `gunicorn` from PATH: this interpreter's, as an activated venv would.
    base["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    database_url, drop = (postgres_database(args.database_url) if args.database_url else (None, lambda: None))
    rounds: list[dict[str, dict]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
            folder = Path(tmp)
            script = folder / "signed.lua"
            script.write_text(WRK_SCRIPT)
            environments = {name: app_environment(name, folder, base, database_url) for name in APPS}
            for variant in args.variant:
                label, _, settings = variant.partition(":")
                name = f"gateway-{label}"
                environments[name] = app_environment(name, folder, base, database_url)
                environments[name].update(setting.split("=", 1) for setting in settings.split(",") if setting)
            for number in range(args.rounds):
                rounds.append({
                    name: measure(name, app_number, number, env, args, folder, script)
                    for app_number, (name, env) in enumerate(environments.items())
                })
                print(f"round {number + 1}: " + ", ".join(f"{name} {r['rps']:.0f} req/s" for name, r in rounds[-1].items()),
                      file=sys.stderr)
            stored = count_stored(environments["gateway"]["GATEWAY_DATABASE_URL"])
    finally:
        drop()
    report(rounds, args, stored)


def count_stored(database_url: str) -> int:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT count(*) FROM conversations")).scalar_one()
    engine.dispose()
    return stored


def report(rounds: list[dict[str, dict]], args, stored: int) -> None:
    print(f"Procfile's gunicorn, wrk -t1 -c{args.connections} -d{args.duration}s after a {args.warmup}s warm-up, "
          f"{len(rounds)} interleaved rounds, {os.cpu_count()} CPUs, gateway on "
          f"{'PostgreSQL' if args.database_url else 'SQLite'}")
    print(f"{'round':>5} {'app':16} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'non-2xx':>8}")
    for number, results in enumerate(rounds, 1):
        for name, r in results.items():
            print(f"{number:>5} {name:16} {r['rps']:>9.1f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['cpu_ms']:>11.3f} "
                  f"{r['non_2xx']:>8}   socket errors: {r['socket_errors']}")
    ratios = [
        {name: {"rps": r["rps"] / results["bare"]["rps"], "p99": r["p99"] / results["bare"]["p99"]}
         for name, r in results.items() if name != "bare"}
        for results in rounds
    ]
    median_round = sorted(range(len(rounds)), key=lambda i: ratios[i]["gateway"]["rps"])[len(rounds) // 2]
    print(f"\nper round, to bare: " + "; ".join(
        f"round {i + 1}: gateway {r['gateway']['rps']:.2f}x (p99 {r['gateway']['p99']:.2f}x), "
        f"sketch {r['sketch']['rps']:.2f}x" for i, r in enumerate(ratios)))
    median, chosen = ratios[median_round], rounds[median_round]
    print(f"median round ({median_round + 1}):")
    for name in (name for name in chosen if name != "bare"):
        print(f"  {name:16} throughput {median[name]['rps']:.2f}x bare, p99 {median[name]['p99']:.2f}x bare, "
              f"CPU {chosen[name]['cpu_ms']:.3f} ms/req (bare {chosen['bare']['cpu_ms']:.3f})")
    cpu = statistics.median(results["gateway"]["cpu_ms"] for results in rounds)
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    print(f"targets: throughput >= {TARGETS['throughput']}x bare and >= sketch: "
          f"{verdict(median['gateway']['rps'] >= TARGETS['throughput'] and median['gateway']['rps'] >= median['sketch']['rps'])}; "
          f"p99 <= {TARGETS['p99']}x bare: {verdict(median['gateway']['p99'] <= TARGETS['p99'])}; "
          f"CPU <= {TARGETS['cpu_ms']} ms/call (median of rounds {cpu:.3f}): {verdict(cpu <= TARGETS['cpu_ms'])}")
    print(f"conversations stored by the gateway: {stored} (warm-ups included)")
    if any(results[name]["non_2xx"] for results in rounds for name in results):
        print("WARNING: some answers were not 2xx; the figures above do not measure what they claim")


if __name__ == "__main__":
    main()
