"""Load test of the arena service, run exactly as `make run` serves it (gunicorn, gunicorn.conf.py, wsgi:app).

    .venv/bin/python bench/service.py                          # SQLite and PostgreSQL (when it answers), ~6 min
    .venv/bin/python bench/service.py --databases sqlite
    .venv/bin/python bench/service.py --quick                  # small numbers, both databases in ~40 s
    .venv/bin/python bench/service.py --phases votes --votes 3000 --vote-rate 300 --vote-seconds 10

For each database it builds a fresh schema through the migrations, adds loopback endpoint models and recorded
models, starts gunicorn on a free loopback port and runs these phases against it:

    streams   N battles against `slow:S` endpoint models, all streams opened at once: the peak number open and
              receiving deltas together, how many ended "ready", time to the first delta.
    battles   whole battles (create, stream to the end, vote) by C concurrent voters for D seconds, on recorded
              answers (replay without delay) and on fast `echo` endpoint models: battles/s.
    votes     K battles created and streamed beforehand, then their votes: closed loop with C in flight (votes/s,
              latency), and open loop at a fixed offered rate (latency at that rate: the target's condition).

The model server runs in its own process (`python -m arena.loopback_model`), so the load generator's GIL does
not slow it. The load generator is one asyncio process: httpx.AsyncClient for battles and streams (one cookie jar
per voter, one shared connection pool), plain keep-alive HTTP/1.1 for the votes themselves (httpx would spend
~2 ms of the machine's CPU per vote). CPU used by the server (and each worker), the client, the model server,
PostgreSQL and the rest of the machine is printed per phase, so a missed target can be traced to whoever was
busy. Everything listens on 127.0.0.1 only, every loop is bounded in count and time, and the servers are
stopped (SIGTERM, then SIGKILL) whatever happens. Exit status 3: gunicorn cannot be run here at all.

PostgreSQL: the schema `public` of --postgres-url is DROPPED and recreated (the run says so). Point it at a
database you do not mind losing, never at one a test run is using at the same time.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from sqlalchemy.exc import SQLAlchemyError  # noqa: E402

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOST = "127.0.0.1"
SECRET_KEY = "bench-service-secret-key-not-for-production"
TARGET_STREAMS = 200
TARGET_VOTES_PER_S = 300.0
TARGET_VOTE_P99_MS = 100.0
STREAM_PROMPT_WORDS = 30  # the `slow` answer echoes the prompt: more words, more (smaller, closer) deltas
RECORDED_ANSWER = (
    "The sky looks blue because air molecules scatter short wavelengths of sunlight much more "
    "strongly than long ones (Rayleigh scattering, proportional to 1/wavelength^4), so blue light "
    "reaches the eye from every direction of the sky, while the sun itself looks slightly yellow."
)
WINNERS = ("a", "b", "tie", "bothbad")
# The vote gates stay on, as in production, at settings that never hold the load generator back: the challenge
# at 1 bit (the client solves it in two hashes; the server checks every proof exactly as at 16 bits, where only
# the browser's work grows) and the rate limits far above its rate (every battle and vote still counted by the
# limiter; one loopback address and a few dozen voters would otherwise be limited at once).
GATE_SETTINGS = {
    "ARENA_VOTE_CHALLENGE_BITS": "1",
    **{
        f"ARENA_RATE_LIMIT_{action}_PER_{scope}": "1000000/minute"
        for action in ("BATTLES", "VOTES")
        for scope in ("VOTER", "ADDRESS")
    },
}
PROOFS: dict[str, str] = {}  # battle id -> the proof its vote sends, solved when the battle is created
EXIT_NO_SERVER = 3  # gunicorn cannot be run here (a server that starts and then fails is exit status 1)


class BenchError(Exception):
    """A failure to report in one line."""


class NoServer(BenchError):
    """gunicorn cannot be run here at all (not installed, or no process can be started)."""


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class Settings:
    databases: list[str]
    postgres_url: str
    streams: int
    slow: float
    concurrency: int
    duration: float
    votes: int
    vote_rate: float
    vote_seconds: float
    quick: bool
    json_path: Path | None
    logs: Path | None
    vote_client: str
    phases: list[str]
    workers: int | None
    threads: int | None


def parse_args(argv: list[str] | None) -> Settings:
    parser = argparse.ArgumentParser(prog="bench/service.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--databases",
        default="sqlite,postgresql",
        help="comma-separated: sqlite, postgresql (skipped with a note when it does not answer)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("ARENA_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="its schema public is dropped and recreated (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small numbers for a smoke run (~20 s per database)")
    parser.add_argument("--streams", type=int, help=f"simultaneous streams to open (default {TARGET_STREAMS})")
    parser.add_argument("--slow", type=float, help="seconds each `slow` answer takes (default 10)")
    parser.add_argument("--concurrency", type=int, help="voters in flight in the battle and vote phases (default 32)")
    parser.add_argument("--duration", type=float, help="seconds of each sustained-battle run (default 10)")
    parser.add_argument("--votes", type=int, help="votes in the closed-loop vote run (default 2000)")
    parser.add_argument(
        "--vote-rate", type=float, help=f"offered votes/s of the open-loop run (default {TARGET_VOTES_PER_S:g})"
    )
    parser.add_argument("--vote-seconds", type=float, help="seconds of the open-loop run (default 10)")
    parser.add_argument(
        "--vote-client",
        choices=("raw", "httpx"),
        default="raw",
        help="how the vote phases send votes: raw keep-alive HTTP/1.1 (little client CPU, default) "
        "or httpx.AsyncClient",
    )
    parser.add_argument(
        "--phases",
        default="streams,battles,votes",
        help="which phases to run (comma-separated: streams, battles, votes; default all)",
    )
    parser.add_argument("--workers", type=int, help="ARENA_WORKERS for gunicorn (default: gunicorn.conf.py's)")
    parser.add_argument("--threads", type=int, help="ARENA_THREADS for gunicorn (default: gunicorn.conf.py's)")
    parser.add_argument("--json", type=Path, help="also write the raw results to this file")
    parser.add_argument("--logs", type=Path, help="keep the gunicorn and model server logs in this folder")
    args = parser.parse_args(argv)
    quick = args.quick
    databases = [d.strip().lower() for d in args.databases.split(",") if d.strip()]
    unknown = [d for d in databases if d not in ("sqlite", "postgresql")]
    if unknown or not databases:
        parser.error(f"--databases takes sqlite and/or postgresql, not {args.databases!r}")

    def pick(value, full, small):
        return value if value is not None else (small if quick else full)

    settings = Settings(
        databases=databases,
        postgres_url=args.postgres_url,
        streams=pick(args.streams, TARGET_STREAMS, 30),
        slow=pick(args.slow, 10.0, 3.0),
        concurrency=pick(args.concurrency, 32, 8),
        duration=pick(args.duration, 10.0, 2.0),
        votes=pick(args.votes, 2000, 100),
        vote_rate=pick(args.vote_rate, TARGET_VOTES_PER_S, 100.0),
        vote_seconds=pick(args.vote_seconds, 10.0, 1.0),
        quick=quick,
        json_path=args.json,
        logs=args.logs,
        vote_client=args.vote_client,
        phases=[x.strip() for x in args.phases.split(",") if x.strip()],
        workers=args.workers,
        threads=args.threads,
    )
    if not settings.phases or set(settings.phases) - {"streams", "battles", "votes"}:
        parser.error(f"--phases takes streams, battles and/or votes, not {args.phases!r}")
    for name in ("streams", "concurrency", "votes", "workers", "threads"):
        if getattr(settings, name) is not None and getattr(settings, name) < 1:
            parser.error(f"--{name} must be at least 1")
    for name in ("slow", "duration", "vote_rate", "vote_seconds"):
        if getattr(settings, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if settings.streams > 2000 or settings.votes > 100_000 or settings.vote_rate * settings.vote_seconds > 100_000:
        parser.error("keep --streams <= 2000 and at most 100000 votes per run")
    return settings


# ------------------------------------------------------------------------------------------------ processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def wait_until_answers(url: str, process: subprocess.Popen, seconds: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with status {process.returncode} before answering: {tail(log)}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise BenchError(f"{what} did not answer {url} within {seconds:g} s: {tail(log)}")


def tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def stop(process: subprocess.Popen | None, grace: float = 15.0) -> None:
    """SIGTERM the process (gunicorn: graceful shutdown of its workers), then SIGKILL its group if it lingers."""
    if process is None or process.poll() is not None:
        return
    try:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # the group this script created for it (start_new_session)
            except (ProcessLookupError, PermissionError):
                process.kill()
            process.wait(timeout=5)


def gunicorn_command() -> list[str]:
    beside = Path(sys.executable).with_name("gunicorn")
    if beside.exists():
        return [str(beside)]
    if shutil.which("gunicorn") is None:
        try:
            import gunicorn  # noqa: F401
        except ImportError:
            raise NoServer("gunicorn is not installed") from None
    return [sys.executable, "-m", "gunicorn"]


def control_socket_args(workdir: Path) -> list[str]:
    """gunicorn >= 25.1 opens a control socket at ~/.gunicorn/gunicorn.ctl by default, one path for every
    instance: a benchmark server would take it over from a `make run` server on the same machine. Ours gets
    its own, in the temporary folder."""
    try:
        from gunicorn import config
    except ImportError:
        return []
    return ["--control-socket", str(workdir / "gunicorn.ctl")] if hasattr(config, "ControlSocket") else []


def gunicorn_settings(env: dict) -> dict:
    """worker_class, workers and threads as gunicorn.conf.py computes them under `env`."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        conf = runpy.run_path(str(REPO / "gunicorn.conf.py"))
    except Exception as error:  # noqa: BLE001 - gunicorn would fail on the same file: say so in one line
        raise BenchError(f"gunicorn.conf.py fails: {type(error).__name__}: {error}") from None
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {
        "worker_class": conf.get("worker_class", "sync"),
        "workers": conf.get("workers", 1),
        "threads": conf.get("threads", 1),
        "keepalive": conf.get("keepalive"),
    }


# ------------------------------------------------------------------------------------------------ CPU accounting

_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
    except OSError:
        pass
    return kids


def _postgres_cpu(database: str | None) -> dict[int, float]:
    """CPU seconds of the PostgreSQL server's own processes and of its backends serving `database`.

    Backends of other databases (other people's test runs on the same server) are left to "other". With
    `database` None (SQLite runs) nothing is counted.
    """
    found = {}
    if database is None:
        return found
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if backend_database(title) in (None, database):
                found[int(entry.name)] = _process_cpu(int(entry.name))
    return found


def backend_database(title: str) -> str | None:
    """The database a PostgreSQL backend serves, from its process title, or None for the server's own processes.

    A backend's title is "postgres: VERSION/CLUSTER: USER DATABASE HOST(PORT) STATE" (HOST(PORT) is "[local]" on
    a Unix socket); the server's own ("postgres: 15/main: walwriter", the postmaster's command line) name no client.
    """
    words = title.split()
    if len(words) >= 5 and words[0] == "postgres:" and ("(" in words[4] or words[4] == "[local]"):
        return words[3]
    return None


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / _TICK


@dataclass
class CpuProbe:
    server: subprocess.Popen
    model: subprocess.Popen
    database: str | None = None  # PostgreSQL: the database whose backends count as "postgres"

    def sample(self) -> dict:
        workers = {pid: _process_cpu(pid) for pid in _children(self.server.pid)}
        return {
            "wall": time.monotonic(),
            "server": _process_cpu(self.server.pid) + sum(workers.values()),
            "workers": workers,
            "model": _process_cpu(self.model.pid),
            "client": time.process_time(),
            "postgres": _postgres_cpu(self.database),
            "machine": _machine_busy(),
            "load": os.getloadavg()[0],
        }

    @staticmethod
    def cores(before: dict, after: dict) -> dict:
        wall = max(after["wall"] - before["wall"], 1e-9)
        used = {k: max(0.0, after[k] - before[k]) / wall for k in ("server", "model", "client", "machine")}
        # Per process, so that backends which start or end in the window do not skew the sum.
        used["postgres"] = (
            sum(max(0.0, cpu - before["postgres"].get(pid, 0.0)) for pid, cpu in after["postgres"].items()) / wall
        )
        used["other"] = max(0.0, used["machine"] - used["server"] - used["model"] - used["client"] - used["postgres"])
        # Per worker: a gthread worker is one process, so one GIL: it can never use more than one core.
        used["workers"] = sorted(
            (max(0.0, cpu - before["workers"].get(pid, 0.0)) / wall for pid, cpu in after["workers"].items()),
            reverse=True,
        )
        used["load"] = after["load"]  # the 1-minute load average at the end of the window
        return used


class Window:
    """The measured part of a phase, for CPU accounting: the whole phase unless the phase restarts it."""

    def __init__(self, probe: CpuProbe):
        self.probe = probe
        self.before = probe.sample()

    def restart(self) -> None:
        self.before = self.probe.sample()

    def cores(self) -> dict:
        return CpuProbe.cores(self.before, self.probe.sample())


# ------------------------------------------------------------------------------------------------ database


def _database_name(url: str) -> str | None:
    from sqlalchemy.engine import make_url

    return make_url(url).database


def reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
            connection.execute(text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


def postgres_answers(url: str) -> str | None:
    """None when PostgreSQL at `url` accepts a connection, else why not."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except (SQLAlchemyError, OSError) as error:
        return str(error).splitlines()[0]
    finally:
        engine.dispose()


@dataclass
class Fixture:
    prompt_id: int
    groups: dict  # phase group -> model names


def seed(url: str, model_base_url: str, slow: float) -> Fixture:
    """Schema through the migrations, one prompt, recorded models answering it, and loopback endpoint models."""
    from sqlalchemy.orm import Session

    from arena import db
    from arena.models import Model, Prompt, RecordedAnswer

    db.upgrade(url)
    engine = db.make_engine(url)
    groups = {
        "recorded": [f"Recorded {i}" for i in range(1, 5)],
        "slow": ["Slow One", "Slow Two"],
        "echo": ["Echo One", "Echo Two"],
    }
    try:
        with Session(engine) as session:
            prompt = Prompt(text="Why is the sky blue?", category="knowledge")
            session.add(prompt)
            session.flush()
            for i, name in enumerate(groups["recorded"]):
                model = Model(name=name, organization=f"Org R{i}", kind="recorded")
                session.add(model)
                session.flush()
                session.add(
                    RecordedAnswer(
                        model_id=model.id, prompt_id=prompt.id, duration_ms=2000.0, text=f"({i}) {RECORDED_ANSWER}"
                    )
                )
            for group, behaviour in (("slow", f"slow:{slow:g}"), ("echo", "echo")):
                for i, name in enumerate(groups[group]):
                    session.add(
                        Model(
                            name=name,
                            organization=f"Org {group} {i}",
                            kind="endpoint",
                            base_url=model_base_url,
                            endpoint_model=behaviour,
                        )
                    )
            session.commit()
            prompt_id = prompt.id
    finally:
        engine.dispose()
    return Fixture(prompt_id=prompt_id, groups=groups)


def snapshots_built(url: str) -> int | None:
    """How many leaderboard snapshots are stored (the run starts from an empty database); None if unknown."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import SQLAlchemyError

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT count(*) FROM snapshots")).scalar_one()
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def activate(url: str, fixture: Fixture, group: str) -> None:
    """Only `group`'s models stay active, so every battle pairs two of them."""
    from sqlalchemy import update

    from arena import db
    from arena.models import Model

    engine = db.make_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(update(Model).values(status="paused"))
            connection.execute(update(Model).where(Model.name.in_(fixture.groups[group])).values(status="active"))
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------------ the client


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


class Failures:
    def __init__(self):
        self.count = 0
        self.examples: list[str] = []

    def add(self, what: str) -> None:
        self.count += 1
        if len(self.examples) < 3 and what not in self.examples:
            self.examples.append(what)

    def text(self) -> str:
        return f"{self.count} failed ({'; '.join(self.examples)})" if self.count else ""


class Voters:
    """Cheap voters: one httpx.AsyncClient (own cookie jar) per voter, all on one shared connection pool."""

    def __init__(self, base_url: str, connections: int):
        self.base_url = base_url
        self.transport = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        )
        self.timeout = httpx.Timeout(30.0, connect=10.0, pool=30.0)

    def new(self) -> httpx.AsyncClient:
        # Not closed one by one: closing a client closes its transport, which is shared (closed in aclose()).
        return httpx.AsyncClient(base_url=self.base_url, transport=self.transport, timeout=self.timeout)

    async def aclose(self) -> None:
        await self.transport.aclose()


async def sse_events(response: httpx.Response):
    """(event, data) pairs of a Server-Sent Events response."""
    event, data = None, []
    async for line in response.aiter_lines():
        if not line:
            if event is not None or data:
                yield event or "message", json.loads("\n".join(data)) if data else None
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


async def create_battle(voter: httpx.AsyncClient, body: dict) -> str:
    response = await voter.post("/api/v1/battles", json=body)
    if response.status_code != 201:
        raise BenchError(f"create: HTTP {response.status_code} {response.text[:120]}")
    created = response.json()
    if "challenge" in created:
        from arena.battles.challenge import solve

        PROOFS[created["id"]] = solve(created["challenge"])
    return created["id"]


def vote_body(battle_id: str, winner: str) -> dict:
    proof = PROOFS.pop(battle_id, None)
    return {"winner": winner} if proof is None else {"winner": winner, "proof": proof}


async def stream_to_end(voter: httpx.AsyncClient, battle_id: str) -> str:
    async with voter.stream("GET", f"/api/v1/battles/{battle_id}/stream") as response:
        if response.status_code != 200:
            await response.aread()
            raise BenchError(f"stream: HTTP {response.status_code} {response.text[:120]}")
        async for event, data in sse_events(response):
            if event == "end":
                return data["state"]
    raise BenchError("stream: ended without an end event")


async def cast_vote(voter: httpx.AsyncClient, battle_id: str) -> None:
    response = await voter.post(f"/api/v1/battles/{battle_id}/vote", json=vote_body(battle_id, random.choice(WINNERS)))
    if response.status_code != 200:
        raise BenchError(f"vote: HTTP {response.status_code} {response.text[:120]}")


async def bounded(limit: int, jobs) -> list:
    """Run the coroutines with at most `limit` in flight; results (or exceptions) in order."""
    gate = asyncio.Semaphore(limit)

    async def run(job):
        async with gate:
            return await job

    return await asyncio.gather(*(run(j) for j in jobs), return_exceptions=True)


def _reason(error: BaseException) -> str:
    text = str(error) if isinstance(error, BenchError) else f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:200]


# ------------------------------------------------------------------------------------------------ phases


def _answer_pieces(prompt: str) -> int:
    """How many chunks the loopback `slow` model splits its answer to `prompt` into (it waits before each)."""
    from arena.loopback_model import _WORDS, echo_answer

    return max(1, len(_WORDS.findall(echo_answer([{"role": "user", "content": prompt}]))))


async def phase_streams(voters: Voters, n: int, slow: float) -> dict:
    """Open n battle streams at once against `slow` models; count how many are open and receiving together."""
    words = " ".join(f"word{i}" for i in range(STREAM_PROMPT_WORDS))
    prompt = f"Please repeat these words slowly: {words}"
    failures = Failures()
    users = [voters.new() for _ in range(n)]
    created = await bounded(32, [create_battle(u, {"prompt": prompt}) for u in users])
    pairs = []
    for user, result in zip(users, created):
        if isinstance(result, BaseException):
            failures.add(_reason(result))
        else:
            pairs.append((user, result))
    state = {"open": 0, "peak": 0, "full_since": None, "full_seconds": 0.0, "deltas": 0}
    ttfd: list[float] = []
    ends: dict[str, int] = {}
    gate = asyncio.Event()

    def opened():
        state["open"] += 1
        state["peak"] = max(state["peak"], state["open"])
        if state["open"] == len(pairs) and state["full_since"] is None:
            state["full_since"] = time.monotonic()

    def closed():
        if state["open"] == len(pairs) and state["full_since"] is not None:
            state["full_seconds"] += time.monotonic() - state["full_since"]
            state["full_since"] = None
        state["open"] -= 1

    async def one(user, battle_id):
        await gate.wait()
        started, first, end = time.monotonic(), None, None
        try:
            async with user.stream("GET", f"/api/v1/battles/{battle_id}/stream") as response:
                if response.status_code != 200:
                    await response.aread()
                    raise BenchError(f"stream: HTTP {response.status_code} {response.text[:120]}")
                async for event, data in sse_events(response):
                    if event == "delta":
                        state["deltas"] += 1
                        if first is None:
                            first = time.monotonic()
                            ttfd.append(first - started)
                            opened()
                    elif event == "end":
                        end = data["state"]
                        break
        except Exception as error:  # noqa: BLE001 - every failure is counted and named, none stops the phase
            failures.add(_reason(error))
        finally:
            if first is not None:
                closed()
        ends[end or "no end"] = ends.get(end or "no end", 0) + 1

    tasks = [asyncio.ensure_future(one(u, b)) for u, b in pairs]
    started = time.monotonic()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=slow + 120)
    elapsed = time.monotonic() - started
    return {
        "requested": n,
        "opened": len(pairs),
        "peak": state["peak"],
        "held_all_seconds": state["full_seconds"],
        "ready": ends.get("ready", 0),
        "ends": ends,
        "deltas": state["deltas"],
        "elapsed": elapsed,
        "ttfd_p50_ms": _ms(percentile(ttfd, 50)),
        "ttfd_p99_ms": _ms(percentile(ttfd, 99)),
        "model_chunk_delay_ms": 1000 * slow / _answer_pieces(prompt),
        "failures": failures.count,
        "failure_examples": failures.examples,
    }


async def phase_battles(voters: Voters, concurrency: int, seconds: float, body: dict) -> dict:
    """Whole battles (create, stream to the end, vote) by `concurrency` voters for `seconds`."""
    failures = Failures()
    latencies: list[float] = []
    done = 0
    started = time.monotonic()
    deadline = started + seconds
    max_each = 100_000

    async def voter_loop():
        nonlocal done
        user = voters.new()
        for _ in range(max_each):
            if time.monotonic() >= deadline:
                return
            t0 = time.monotonic()
            try:
                battle_id = await create_battle(user, body)
                end = await stream_to_end(user, battle_id)
                if end != "ready":
                    raise BenchError(f"battle ended {end}")
                await cast_vote(user, battle_id)
            except Exception as error:  # noqa: BLE001
                failures.add(_reason(error))
                await asyncio.sleep(0.05)  # a failing server must not be spun against
                continue
            latencies.append(time.monotonic() - t0)
            done += 1

    await asyncio.wait_for(asyncio.gather(*(voter_loop() for _ in range(concurrency))), timeout=seconds + 120)
    elapsed = time.monotonic() - started
    return {
        "battles": done,
        "elapsed": elapsed,
        "per_s": done / elapsed,
        "concurrency": concurrency,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "failures": failures.count,
        "failure_examples": failures.examples,
    }


async def prepare_ready_battles(
    voters: Voters, count: int, concurrency: int, body: dict, failures: Failures
) -> list[tuple[httpx.AsyncClient, str]]:
    """`count` battles streamed to "ready" by `concurrency` voters, each making its share one after another.

    One at a time per voter: two first requests in flight from one fresh cookie jar would make two voters, and
    the battle of the voter whose cookie is overwritten could no longer be voted on.
    """

    async def voter(share: int):
        user, ready = voters.new(), []
        for _ in range(share):
            try:
                battle_id = await create_battle(user, body)
                end = await stream_to_end(user, battle_id)
                if end != "ready":
                    raise BenchError(f"battle ended {end}")
                ready.append((user, battle_id))
            except Exception as error:  # noqa: BLE001
                failures.add(_reason(error))
        return ready

    shares = [count // concurrency + (1 if i < count % concurrency else 0) for i in range(concurrency)]
    per_voter = await asyncio.wait_for(asyncio.gather(*(voter(n) for n in shares if n)), timeout=60 + count / 5)
    # Interleave the voters, so the votes that follow spread over all of them.
    ready = []
    for i in range(max(shares)):
        ready += [battles[i] for battles in per_voter if i < len(battles)]
    return ready


class RawVoteClient:
    """Votes over plain keep-alive HTTP/1.1 connections, with the voter's session cookie set by hand.

    httpx costs the load generator ~2 ms of CPU per request; at hundreds of votes/s on a 2-core machine that
    would be CPU taken from the server being measured. This sends the same request (POST, JSON body, the cookie
    the voter's httpx client received) for a small fraction of that. Responses must carry Content-Length (Flask's
    JSON responses do); a connection the server closes is replaced.

    Connections are opened up front (`open`) and taken least recently used first, so the votes spread over all of
    them, and over the gunicorn workers that accepted them, as many voters' browsers would spread them. Taking the
    most recently used one instead sent nearly every vote down the same one or two connections, to one worker,
    whose single GIL then capped the rate while the other worker idled.
    """

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.idle: collections.deque[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = collections.deque()
        self.opened = 0

    async def open(self, count: int) -> None:
        self.idle.extend(await asyncio.gather(*(self._open() for _ in range(count))))

    async def post_json(self, path: str, payload: dict, cookie: str) -> tuple[int, bytes]:
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nCookie: {cookie}\r\n\r\n"
        ).encode()
        for attempt in (1, 2):
            reused = attempt == 1 and bool(self.idle)
            reader, writer = self.idle.popleft() if reused else await self._open()
            try:
                writer.write(head + body)
                status_line = await reader.readuntil(b"\r\n")
                headers = await reader.readuntil(b"\r\n\r\n")
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                writer.close()
                if reused:
                    continue  # the server closed an idle keep-alive connection: retry once on a fresh one
                raise
            status = int(status_line.split(b" ", 2)[1])
            length, close = None, False
            for line in headers.split(b"\r\n"):
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length is None:
                writer.close()
                raise BenchError(f"vote: HTTP {status} without Content-Length")
            data = await reader.readexactly(length)
            if close:
                writer.close()
            else:
                self.idle.append((reader, writer))
            return status, data
        raise BenchError("vote: no connection")  # not reached: the second attempt returns or raises

    async def _open(self):
        self.opened += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()


def session_cookie(user: httpx.AsyncClient) -> str:
    """The Cookie header of a voter (the signed Flask session that names the voter)."""
    return "; ".join(f"{name}={value}" for name, value in user.cookies.items())


async def timed_vote(
    sender, user: httpx.AsyncClient, battle_id: str, latencies: list[float], failures: Failures
) -> None:
    winner = random.choice(WINNERS)
    t0 = time.monotonic()
    try:
        if isinstance(sender, RawVoteClient):
            status, data = await sender.post_json(
                f"/api/v1/battles/{battle_id}/vote", vote_body(battle_id, winner), session_cookie(user)
            )
        else:
            response = await user.post(f"/api/v1/battles/{battle_id}/vote", json=vote_body(battle_id, winner))
            status, data = response.status_code, response.content
        if status != 200:
            raise BenchError(f"vote: HTTP {status} {data[:120].decode(errors='replace')}")
    except Exception as error:  # noqa: BLE001
        failures.add(_reason(error))
        return
    latencies.append(time.monotonic() - t0)


def vote_sender(client_kind: str, base_url: str):
    if client_kind == "httpx":
        return None
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    return RawVoteClient(host, port)


async def phase_votes_closed(
    voters: Voters, count: int, concurrency: int, body: dict, window: Window, client_kind: str
) -> dict:
    """Votes on `count` ready battles with `concurrency` requests in flight: the most votes/s it takes."""
    failures = Failures()
    ready = await prepare_ready_battles(voters, count, concurrency, body, failures)
    prepared = failures.count
    sender = vote_sender(client_kind, voters.base_url)
    if sender is not None:
        await sender.open(concurrency)
    latencies: list[float] = []
    window.restart()
    started = time.monotonic()
    try:
        await asyncio.wait_for(
            bounded(concurrency, [timed_vote(sender, u, b, latencies, failures) for u, b in ready]),
            timeout=60 + count / 10,
        )
    finally:
        if sender is not None:
            sender.close()
    elapsed = time.monotonic() - started
    return {
        "votes": len(latencies),
        "elapsed": elapsed,
        "per_s": len(latencies) / elapsed,
        "concurrency": concurrency,
        "client": client_kind,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies, default=None)),
        "prepare_failures": prepared,
        "failures": failures.count - prepared,
        "failure_examples": failures.examples,
    }


async def phase_votes_open(
    voters: Voters,
    rate: float,
    seconds: float,
    concurrency: int,
    body: dict,
    window: Window,
    client_kind: str,
    max_in_flight: int,
) -> dict:
    """Votes sent at a fixed rate whatever the answers' speed (open loop): latency at that offered load.

    At most `max_in_flight` requests are outstanding; beyond that the sender waits, and the wait shows as
    client lag (the server is not keeping up with the offered rate).
    """
    failures = Failures()
    count = max(1, round(rate * seconds))
    ready = await prepare_ready_battles(voters, count, concurrency, body, failures)
    prepared = failures.count
    sender = vote_sender(client_kind, voters.base_url)
    if sender is not None:
        await sender.open(concurrency)
    gate = asyncio.Semaphore(max_in_flight)
    latencies: list[float] = []
    lateness: list[float] = []
    tasks = []

    async def send(user, battle_id):
        try:
            await timed_vote(sender, user, battle_id, latencies, failures)
        finally:
            gate.release()

    window.restart()
    started = time.monotonic()
    try:
        for i, (user, battle_id) in enumerate(ready):
            due = started + i / rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            await gate.acquire()
            lateness.append(max(0.0, time.monotonic() - due))
            tasks.append(asyncio.ensure_future(send(user, battle_id)))
        sent = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        if sender is not None:
            sender.close()
    elapsed = time.monotonic() - started
    return {
        "offered_per_s": rate,
        "votes": len(latencies),
        "elapsed": elapsed,
        "client": client_kind,
        "sent_per_s": (len(ready) - 1) / max(sent - started, 1e-9) if len(ready) > 1 else 0.0,
        "per_s": len(latencies) / elapsed,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(max(latencies, default=None)),
        "client_lag_p99_ms": _ms(percentile(lateness, 99)),
        "prepare_failures": prepared,
        "failures": failures.count - prepared,
        "failure_examples": failures.examples,
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else 1000 * seconds


# ------------------------------------------------------------------------------------------------ one database


@dataclass
class Run:
    database: str
    url: str
    note: str = ""
    server: dict = field(default_factory=dict)
    phases: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    skipped: str | None = None
    snapshots: int | None = None  # leaderboard snapshots the server built during the run (None: not known)


def run_database(settings: Settings, database: str, model_url: str, model_proc: subprocess.Popen, workdir: Path) -> Run:
    if database == "sqlite":
        url = f"sqlite:///{workdir / 'arena.db'}"
        run = Run(database, url, note=f"file {workdir / 'arena.db'}")
    else:
        url = settings.postgres_url
        run = Run(database, url)
        why = postgres_answers(url)
        if why:
            run.skipped = f"PostgreSQL at {url} does not answer ({why})"
            return run
        print(f"  PostgreSQL: dropping and recreating schema public of {url}", flush=True)
        reset_postgres(url)
        run.note = f"{url} (schema public dropped and recreated)"
    fixture = seed(url, model_url, settings.slow)

    port = free_port()
    instance = workdir / "instance"
    instance.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "ARENA_DATABASE_URL": url,
        "ARENA_PORT": str(port),
        "ARENA_HOST": HOST,
        "ARENA_INSTANCE_PATH": str(instance),
        "ARENA_SECRET_KEY": SECRET_KEY,
        "ARENA_REPLAY_MAX_SECONDS": "0",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("ARENA_ACCESS_LOG", None)
    for key, value in GATE_SETTINGS.items():
        env.setdefault(key, value)  # an operator's own setting in the environment is measured as it is
    for key, value in (("ARENA_WORKERS", settings.workers), ("ARENA_THREADS", settings.threads)):
        if value is not None:
            env[key] = str(value)
    run.server = gunicorn_settings(env)
    log = (settings.logs or workdir) / f"gunicorn-{database}.log"
    command = [*gunicorn_command(), "--config", "gunicorn.conf.py", *control_socket_args(workdir), "wsgi:app"]
    server = None
    try:
        with open(log, "wb") as log_file:
            try:
                server = subprocess.Popen(
                    command,
                    cwd=REPO,
                    env=env,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as error:
                raise NoServer(f"cannot run {command[0]}: {error}") from None
        base = f"http://{HOST}:{port}"
        wait_until_answers(f"{base}/api/v1/prompts", server, 30, "gunicorn", log)
        probe = CpuProbe(server, model_proc, _database_name(url) if database == "postgresql" else None)
        run.phases, run.cpu = asyncio.run(
            _phases(
                settings,
                base,
                url,
                fixture,
                probe,
                BuilderRunner(env, instance, log.parent / f"builder-{database}.log"),
            )
        )
        run.snapshots = snapshots_built(url)
        if server.poll() is not None:
            raise BenchError(f"gunicorn exited during the run (status {server.returncode}): {tail(log, 6)}")
    finally:
        stop(server)
    return run


class BuilderRunner:
    """The builder process as `arena serve` runs it (`arena builder`, at its own lower priority), made to build
    back to back while a phase runs: every counted vote makes a snapshot due (ARENA_SNAPSHOT_EVERY_VOTES=1)."""

    def __init__(self, env: dict, instance: Path, log: Path):
        self.env = {**env, "ARENA_SNAPSHOT_EVERY_VOTES": "1", "ARENA_BUILDER_CHECK_SECONDS": "0.1"}
        self.env.setdefault("ARENA_SNAPSHOT_REPLICATES", "1000")  # the default: a build as the service runs it
        self.heartbeat, self.log, self.process = instance / "builder-heartbeat.json", log, None

    def beat(self) -> dict:
        try:
            return json.loads(self.heartbeat.read_text())
        except (OSError, ValueError):
            return {}

    def start(self) -> None:
        with open(self.log, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "arena.cli", "builder"],
                cwd=REPO,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 300
        while self.beat().get("state") != "building" or self.beat().get("pid") != self.process.pid:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"the builder did not start a build: {tail(self.log, 6)}")
            time.sleep(0.05)

    def stop(self) -> dict:
        """Stop it; what it did: builds finished and whether it was still building."""
        beat = self.beat()
        stop(self.process)
        return {"builds_finished": beat.get("builds", 0), "building_at_end": beat.get("state") == "building"}


async def _phases(settings: Settings, base: str, url: str, fixture: Fixture, probe: CpuProbe, builder: BuilderRunner):
    phases, cpu = {}, {}
    voters = Voters(base, connections=max(settings.streams, settings.concurrency) + 64)
    recorded = {"prompt_id": fixture.prompt_id}
    typed = {"prompt": "Tell me about tides."}
    try:

        async def measured(name, group, coroutine_factory):
            activate(url, fixture, group)
            print(f"  {name} ...", flush=True)
            window = Window(probe)
            phases[name] = await coroutine_factory(window)
            cpu[name] = window.cores()

        if "streams" in settings.phases:
            await measured("streams", "slow", lambda w: phase_streams(voters, settings.streams, settings.slow))
        if "battles" in settings.phases:
            await measured(
                "battles_recorded",
                "recorded",
                lambda w: phase_battles(voters, settings.concurrency, settings.duration, recorded),
            )
            await measured(
                "battles_echo", "echo", lambda w: phase_battles(voters, settings.concurrency, settings.duration, typed)
            )
        if "votes" in settings.phases:
            await measured(
                "votes_closed",
                "recorded",
                lambda w: phase_votes_closed(
                    voters, settings.votes, settings.concurrency, recorded, w, settings.vote_client
                ),
            )
            await measured(
                "votes_open",
                "recorded",
                lambda w: phase_votes_open(
                    voters,
                    settings.vote_rate,
                    settings.vote_seconds,
                    settings.concurrency,
                    recorded,
                    w,
                    settings.vote_client,
                    max_in_flight=256,
                ),
            )
            # The same open loop while the builder builds snapshots back to back beside the server.
            builder.start()
            try:
                await measured(
                    "votes_open_build",
                    "recorded",
                    lambda w: phase_votes_open(
                        voters,
                        settings.vote_rate,
                        settings.vote_seconds,
                        settings.concurrency,
                        recorded,
                        w,
                        settings.vote_client,
                        max_in_flight=256,
                    ),
                )
            finally:
                phases.setdefault("votes_open_build", {}).update(builder.stop())
    finally:
        await voters.aclose()
    return phases, cpu


# ------------------------------------------------------------------------------------------------ report


def _f(value, digits=0, unit="") -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def verdict(ok: bool, applies: bool) -> str:
    if not applies:
        return "n/a"
    return "PASS" if ok else "MISS"


def report(run: Run, settings: Settings) -> tuple[str, list[tuple[str, str]]]:
    """The table of one database, and its (target, verdict) lines."""
    title = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[run.database]
    if run.skipped:
        return f"\n== {title}: skipped: {run.skipped}\n", []
    p, s, cpu = run.phases, run.server, run.cpu
    full = not settings.quick
    is_pg = run.database == "postgresql"
    on_pg = "" if is_pg else " (on PG)"
    rows, verdicts = [], []
    if "streams" in p:
        st = p["streams"]
        streams_ok = st["peak"] >= TARGET_STREAMS and st["ready"] >= TARGET_STREAMS
        held_all = st["peak"] == st["requested"] and st["ready"] == st["requested"]
        rows += [
            (
                "streams held at once (peak open, receiving)",
                f"{st['peak']} / {st['requested']} requested, all open together for {st['held_all_seconds']:.1f} s",
                f">= {TARGET_STREAMS}",
                verdict(streams_ok, full),
            ),
            (
                "  streams ended ready",
                f"{st['ready']} / {st['requested']}"
                + (f"  ends {st['ends']}" if st["ready"] != st["requested"] else ""),
                "all",
                verdict(held_all, True),
            ),
            (
                "  time to first delta p50 / p99",
                f"{_f(st['ttfd_p50_ms'], 0, ' ms')} / {_f(st['ttfd_p99_ms'], 0, ' ms')}  "
                f"(model's own first-chunk delay ~{st['model_chunk_delay_ms']:.0f} ms)",
                "",
                "",
            ),
        ]
        if full:
            verdicts.append((f"{title}: {TARGET_STREAMS} simultaneous streams held", verdict(streams_ok, True)))
    for name, label in (("battles_recorded", "recorded answers"), ("battles_echo", "echo endpoint models")):
        if name in p:
            b = p[name]
            rows.append(
                (
                    f"battles/s, {label} (C={b['concurrency']})",
                    f"{b['per_s']:.1f}  ({b['battles']} in {b['elapsed']:.1f} s; battle p50 "
                    f"{_f(b['p50_ms'], 0)} / p99 {_f(b['p99_ms'], 0)} ms; server CPU "
                    f"{_per(cpu[name]['server'], b['per_s'])} ms/battle)",
                    "",
                    "",
                )
            )
    if "votes_closed" in p:
        vc = p["votes_closed"]
        closed_ok = vc["per_s"] >= TARGET_VOTES_PER_S and vc["failures"] == 0
        rows += [
            (
                f"votes/s, closed loop (C={vc['concurrency']}, {vc['client']} client)",
                f"{vc['per_s']:.0f}  ({vc['votes']} votes in {vc['elapsed']:.2f} s; server CPU "
                f"{_per(cpu['votes_closed']['server'], vc['per_s'])} ms/vote)",
                f">= {TARGET_VOTES_PER_S:g}{on_pg}",
                verdict(closed_ok, full and is_pg),
            ),
            (
                "  vote latency p50 / p99 / max (closed loop)",
                f"{_f(vc['p50_ms'], 1)} / {_f(vc['p99_ms'], 1)} / {_f(vc['max_ms'], 0)} ms",
                "",
                "",
            ),
        ]
        if full and is_pg:
            verdicts.append((f"{title}: >= {TARGET_VOTES_PER_S:g} votes/s (closed loop)", verdict(closed_ok, True)))
    if "votes_open" in p:
        vo = p["votes_open"]
        applies = full and is_pg and settings.vote_rate >= TARGET_VOTES_PER_S
        open_ok = (
            vo["per_s"] >= 0.97 * TARGET_VOTES_PER_S
            and vo["p99_ms"] is not None
            and vo["p99_ms"] < TARGET_VOTE_P99_MS
            and vo["failures"] == 0
        )
        rows.append(
            (
                f"votes at {vo['offered_per_s']:g}/s offered (open loop)",
                f"{vo['per_s']:.0f}/s done, p50 {_f(vo['p50_ms'], 1)} / p99 {_f(vo['p99_ms'], 1)} / "
                f"max {_f(vo['max_ms'], 0)} ms  (client lag p99 {_f(vo['client_lag_p99_ms'], 1)} ms; server "
                f"CPU {_per(cpu['votes_open']['server'], vo['per_s'])} ms/vote)",
                f"p99 < {TARGET_VOTE_P99_MS:g} ms at >= {TARGET_VOTES_PER_S:g}/s{on_pg}",
                verdict(open_ok, applies),
            )
        )
        if full and is_pg:
            verdicts.append(
                (
                    f"{title}: vote p99 < {TARGET_VOTE_P99_MS:g} ms at {TARGET_VOTES_PER_S:g}/s offered",
                    verdict(open_ok, applies),
                )
            )
    if "votes_open_build" in p and "per_s" in p["votes_open_build"]:
        vb = p["votes_open_build"]
        rows.append(
            (
                f"votes at {vb['offered_per_s']:g}/s offered, snapshot builds running",
                f"{vb['per_s']:.0f}/s done, p50 {_f(vb['p50_ms'], 1)} / p99 {_f(vb['p99_ms'], 1)} / "
                f"max {_f(vb['max_ms'], 0)} ms  ({vb['builds_finished']} builds finished"
                f"{', one still running' if vb['building_at_end'] else ''}; server CPU "
                f"{_per(cpu['votes_open_build']['server'], vb['per_s'])} ms/vote)",
                "",
                "",
            )
        )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    twidth = max(len(r[2]) for r in rows)
    lines = [
        f"\n== {title}: {run.note}",
        f"   server: gunicorn {s['worker_class']}, {s['workers']} workers x {s['threads']} threads "
        f"(gunicorn.conf.py via `gunicorn --config gunicorn.conf.py wsgi:app`); snapshots are built by the "
        f"builder process only (`arena builder`, niced), started for the last vote phase: "
        f"{'?' if run.snapshots is None else run.snapshots} built during the run",
        f"   vote gates on: challenge at ARENA_VOTE_CHALLENGE_BITS="
        f"{os.environ.get('ARENA_VOTE_CHALLENGE_BITS') or GATE_SETTINGS['ARENA_VOTE_CHALLENGE_BITS']} (solved by "
        f"the client), rate limits {'off' if os.environ.get('ARENA_RATE_LIMITS') == 'off' else 'counted'} "
        f"(limits set far above the load); Redis: {'yes' if os.environ.get('ARENA_REDIS_URL') else 'no'}",
        f"   {'metric'.ljust(width)}  {'measured'.ljust(vwidth)}  {'target'.ljust(twidth)}  result",
    ]
    for name, value, target, result in rows:
        lines.append(f"   {name.ljust(width)}  {value.ljust(vwidth)}  {target.ljust(twidth)}  {result}".rstrip())
    for name, ph in p.items():
        if ph.get("failures") or ph.get("prepare_failures"):
            lines.append(
                f"   ! {name}: {ph.get('failures', 0)} failed, {ph.get('prepare_failures', 0)} failed "
                f"while preparing: {'; '.join(ph['failure_examples'])}"
            )
    lines.append(
        f"   CPU cores used per phase (of {os.cpu_count()}; vote phases: the votes only): server = gunicorn "
        f"master + workers, client = this load generator, model = loopback model server, postgres = the "
        f"server's own processes and this database's backends, other = the rest of the machine (other "
        f"people's work: the numbers above are only as good as this is small); load = 1-minute load "
        f"average at the phase's end"
    )
    for name, used in cpu.items():
        workers = "/".join(f"{w:.2f}" for w in used["workers"])
        lines.append(
            f"     {name.ljust(18)} server {used['server']:.2f} (workers {workers})  client "
            f"{used['client']:.2f}  model {used['model']:.2f}  postgres {used['postgres']:.2f}  "
            f"other {used['other']:.2f}  machine {used['machine']:.2f}  load {used.get('load', 0):.1f}"
        )
    return "\n".join(lines) + "\n", verdicts


def _per(cores: float, per_s: float) -> str:
    """Milliseconds of CPU per operation, from cores used and operations per second."""
    return f"{1000 * cores / per_s:.1f}" if per_s > 0 else "-"


# ------------------------------------------------------------------------------------------------ main


def start_model_server(logs: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    log = logs / "loopback-model.log"
    with open(log, "wb") as log_file:
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "arena.loopback_model", "--host", HOST, "--port", str(port), "--quiet"],
                cwd=REPO,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as error:
            raise NoServer(f"cannot start a process: {error}") from None
    base = f"http://{HOST}:{port}/v1"
    try:
        wait_until_answers(f"{base}/models", process, 20, "the loopback model server", log)
    except BaseException:
        stop(process)
        raise
    return process, base


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    started = time.monotonic()
    load = os.getloadavg()
    print(
        f"bench/service.py{' --quick' if settings.quick else ''}: {os.cpu_count()} cores, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; python {sys.version.split()[0]}, httpx {httpx.__version__}"
    )
    print(
        f"  streams {settings.streams} x slow:{settings.slow:g}; battles C={settings.concurrency} for "
        f"{settings.duration:g} s; votes {settings.votes} closed loop + {settings.vote_rate:g}/s for "
        f"{settings.vote_seconds:g} s open loop",
        flush=True,
    )
    runs: list[Run] = []
    model = None
    try:
        with tempfile.TemporaryDirectory(prefix="arena-bench-service-") as tmp:
            workdir = Path(tmp)
            if settings.logs:
                settings.logs.mkdir(parents=True, exist_ok=True)
            model, model_url = start_model_server(settings.logs or workdir)
            for database in settings.databases:
                print(f"{database}:", flush=True)
                dbdir = workdir / database
                dbdir.mkdir()
                runs.append(run_database(settings, database, model_url, model, dbdir))
                print(report(runs[-1], settings)[0], flush=True)
            stop(model, grace=5)
    except NoServer as error:
        print(f"bench/service.py: cannot start the server: {error}", file=sys.stderr)
        return EXIT_NO_SERVER
    except (BenchError, asyncio.TimeoutError) as error:
        print(
            f"bench/service.py: {_reason(error) if isinstance(error, BenchError) else 'a phase timed out'}",
            file=sys.stderr,
        )
        return 1
    except (SQLAlchemyError, OSError, httpx.HTTPError) as error:
        print(f"bench/service.py: {_reason(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench/service.py: interrupted", file=sys.stderr)
        return 130
    finally:
        stop(model, grace=5)

    verdicts = [v for run in runs for v in report(run, settings)[1]]
    print("Targets" + (" (not checked in --quick mode: too few streams and votes)" if settings.quick else ""))
    for name, result in verdicts:
        print(f"  {result:5} {name}")
    print(f"total {time.monotonic() - started:.1f} s; load average now {os.getloadavg()[0]:.2f}")
    if settings.json_path:
        settings.json_path.parent.mkdir(parents=True, exist_ok=True)
        settings.json_path.write_text(
            json.dumps(
                {
                    "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(settings).items()},
                    "cores": os.cpu_count(),
                    "runs": [vars(r) for r in runs],
                },
                indent=2,
                default=str,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
