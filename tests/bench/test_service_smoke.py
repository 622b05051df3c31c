"""Smoke test of bench/service.py: a --quick run on SQLite against a real gunicorn prints its table, holds all its
streams open together, and every battle and vote of every phase succeeds.

The numbers themselves are not checked (they depend on the machine and what else runs on it); what is checked is
that the harness drives the service end to end the way `make run` serves it.
"""

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "service.py"
EXIT_NO_SERVER = 3


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_service", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_service", module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_percentile_is_nearest_rank():
    percentile = _load_bench().percentile
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0 and percentile(values, 99) == 99.0 and percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0 and percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None


def test_quick_run_on_sqlite_holds_every_stream(tmp_path):
    pytest.importorskip("gunicorn")
    out = tmp_path / "service.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--databases", "sqlite", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=REPO,
    )
    if proc.returncode == EXIT_NO_SERVER:
        pytest.skip(f"cannot start the server here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    text = proc.stdout
    for needle in (
        "== SQLite",
        "gunicorn gthread",
        "streams held at once",
        "time to first delta",
        "battles/s, recorded answers",
        "battles/s, echo endpoint models",
        "votes/s, closed loop",
        "open loop",
        "CPU cores used per phase",
        "Targets",
    ):
        assert needle in text, f"{needle!r} missing from:\n{text}"
    held = re.search(r"streams held at once.*?(\d+) / (\d+) requested", text)
    assert held and held.group(1) == held.group(2), text

    run = json.loads(out.read_text())["runs"][0]
    phases = run["phases"]
    streams = phases["streams"]
    assert streams["requested"] >= 10
    assert streams["peak"] == streams["opened"] == streams["ready"] == streams["requested"], streams
    assert streams["held_all_seconds"] > 0 and streams["deltas"] > streams["requested"]
    for name in ("battles_recorded", "battles_echo"):
        assert phases[name]["battles"] > 0 and phases[name]["failures"] == 0, phases[name]
    for name in ("votes_closed", "votes_open"):
        vote = phases[name]
        assert vote["votes"] > 0 and vote["failures"] == 0 and vote["prepare_failures"] == 0, vote
        assert 0 < vote["p50_ms"] <= vote["p99_ms"]
    assert run["server"]["worker_class"] == "gthread"


def test_postgres_backends_are_told_apart_by_database():
    backend_database = _load_bench().backend_database
    assert backend_database("postgres: 15/main: postgres test_h2 127.0.0.1(52690) idle in transaction") == "test_h2"
    assert backend_database("postgres: 15/main: arena arena [local] idle") == "arena"
    postmaster = "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main"
    for own in (
        "postgres: 15/main: walwriter",
        "postgres: 15/main: logical replication launcher",
        "postgres: 15/main: checkpointer",
        postmaster,
    ):
        assert backend_database(own) is None


def test_votes_spread_over_every_open_connection():
    """The raw vote client takes its least recently used connection, so votes reach every connection (and the
    workers that accepted them) in turn, instead of all going down the one used last."""
    bench = _load_bench()

    async def scenario():
        served = []

        async def handle(reader, writer):
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
                await reader.readexactly(length)
                served.append(writer.get_extra_info("peername")[1])
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = bench.RawVoteClient("127.0.0.1", port)
        await client.open(3)
        for _ in range(6):
            assert await client.post_json("/vote", {"winner": "a"}, "session=x") == (200, b"{}")
        client.close()
        server.close()
        await server.wait_closed()
        return served

    served = asyncio.run(scenario())
    assert len(set(served)) == 3 and served[:3] == served[3:]  # each connection in turn, twice
