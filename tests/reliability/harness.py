"""What the reliability tests drive the service with: a TCP proxy to cut dependencies with, a gunicorn server
started as `make run` starts it, data seeded straight into the database, and voters that record every answer.

The proxy is how a dependency "restarts" without touching the machine's real PostgreSQL or Redis (other test
runs use them at the same time): the service is pointed at a loopback port of ours, and cutting the proxy closes
every connection through it and stops listening, which the service sees exactly as a server going away
(established connections reset, new ones refused); restoring it listens on the same port again.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, select

from tests.arena.conftest import reset_postgres  # noqa: F401  (the reliability tests import it from here)

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
# Per test process: address hashes (keyed by it) and so the rate limits' Redis keys differ from any other run's.
SECRET_KEY = "reliability-tests-" + secrets.token_hex(8)
# Rate limits stay on, so that every request counts through Redis, but far above what the tests send.
UNLIMITED = {
    f"ARENA_RATE_LIMIT_{action}_PER_{scope}": "100000/minute"
    for action in ("BATTLES", "VOTES")
    for scope in ("VOTER", "ADDRESS")
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------------------------------------ the proxy


class TcpProxy:
    """A loopback TCP proxy to `upstream` that can be cut (every connection closed, nothing listening) and restored.

    One thread and a selector move the bytes of every connection, so a few hundred connections cost one thread.
    """

    def __init__(self, upstream: tuple[str, int], port: int | None = None):
        self.upstream, self.port = upstream, port or free_port()
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._stopped = False
        self.accepted = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"proxy-{self.port}")

    def __enter__(self) -> "TcpProxy":
        self.restore()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._call(self._cut)
        self._stopped = True
        self._thread.join(5)

    def cut(self) -> None:
        """Close every connection through the proxy and stop listening: a dependency that went away."""
        self._call(self._cut)

    def restore(self) -> None:
        """Listen on the same port again: the dependency is back."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, self.port))
        listener.listen(512)
        listener.setblocking(False)
        self._call(lambda: self._listen(listener))

    # Changes to the selector happen on the proxy's own thread (or before it starts).
    def _call(self, change) -> None:
        if not self._thread.is_alive():
            change()
            return
        with self._lock:  # one change at a time
            done = threading.Event()
            self._pending = (change, done)
            self._wake_w.send(b"x")
            if not done.wait(5):
                raise RuntimeError("the proxy thread did not answer")

    def _listen(self, listener: socket.socket) -> None:
        self._listener = listener
        self._selector.register(listener, selectors.EVENT_READ, "accept")

    def _cut(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None
        for sock in list(self._pairs):
            self._close(sock)

    def _close(self, sock: socket.socket) -> None:
        peer = self._pairs.pop(sock, None)
        for end in (sock, peer):
            if end is None:
                continue
            self._pairs.pop(end, None)
            try:
                self._selector.unregister(end)
            except (KeyError, ValueError):
                pass
            try:
                # SO_LINGER 0: a reset, as a killed server's kernel sends, not a polite FIN
                end.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
            end.close()

    def _run(self) -> None:
        while not self._stopped:
            for key, _events in self._selector.select(timeout=0.5):
                if key.data == "wake":
                    self._wake_r.recv(64)
                    change, done = self._pending
                    try:
                        change()
                    finally:
                        done.set()
                elif key.data == "accept":
                    if key.fileobj is self._listener:  # not one closed by a cut earlier in this round
                        self._accept()
                elif key.fileobj in self._pairs:
                    self._pump(key.fileobj)
        self._cut()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except (BlockingIOError, OSError):
            return
        try:
            server = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        self.accepted += 1
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._pairs[client], self._pairs[server] = server, client
        self._selector.register(client, selectors.EVENT_READ, "pipe")
        self._selector.register(server, selectors.EVENT_READ, "pipe")

    def _pump(self, sock: socket.socket) -> None:
        peer = self._pairs[sock]
        try:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError
            peer.setblocking(True)  # loopback and small messages: a short blocking send keeps this simple
            peer.settimeout(5)
            peer.sendall(data)
            peer.setblocking(False)
        except OSError:
            self._close(sock)


# ------------------------------------------------------------------------------------------------ the service


def gunicorn_available() -> bool:
    beside = Path(sys.executable).with_name("gunicorn")
    return beside.exists() or shutil.which("gunicorn") is not None


class Server:
    """`gunicorn --config gunicorn.conf.py wsgi:app` on a free loopback port, with the given ARENA_* settings."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        *,
        name: str = "arena",
        workers: int = 2,
        threads: int = 32,
        pool: int = 4,
        extra: dict | None = None,
        builder: bool = False,
    ):
        self.name = name
        self.port = free_port()
        self.base = f"http://{HOST}:{self.port}"
        instance = workdir / f"instance-{name}"
        instance.mkdir(parents=True, exist_ok=True)
        self.log = workdir / f"gunicorn-{name}.log"
        self.instance = instance
        # `arena serve` runs gunicorn and `arena builder` side by side; with builder=True so does this server
        self.builder_log = workdir / f"builder-{name}.log" if builder else None
        self.builder: subprocess.Popen | None = None
        inherited = {k: v for k, v in os.environ.items() if k not in ("ARENA_ACCESS_LOG", "PROMETHEUS_MULTIPROC_DIR")}
        self.env = {
            **inherited,
            "ARENA_DATABASE_URL": database_url,
            "ARENA_PORT": str(self.port),
            "ARENA_HOST": HOST,
            "ARENA_INSTANCE_PATH": str(instance),
            "ARENA_SECRET_KEY": SECRET_KEY,
            "ARENA_SIGNING_KEY_FILE": str(workdir / "signing_key.pem"),
            "ARENA_REPLAY_MAX_SECONDS": "0",
            "ARENA_WORKERS": str(workers),
            "ARENA_THREADS": str(threads),
            "ARENA_DB_POOL_SIZE": str(pool),
            "ARENA_VOTE_CHALLENGE": "off",
            "ARENA_SNAPSHOT_EVERY_VOTES": "0",
            "ARENA_ALLOW_PRIVATE_ENDPOINTS": "1",
            "PYTHONUNBUFFERED": "1",
            **UNLIMITED,
            **(extra or {}),
        }
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "Server":
        gunicorn = Path(sys.executable).with_name("gunicorn")
        command = [str(gunicorn) if gunicorn.exists() else "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"]
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(f"{self.base}/api/v1/prompts", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise RuntimeError(f"gunicorn did not answer within 30 s: {self.tail()}")
        self.wait_for_workers()
        if self.builder_log is not None:
            with open(self.builder_log, "wb") as log:
                self.builder = subprocess.Popen(
                    [sys.executable, "-m", "arena.cli", "builder"],
                    cwd=REPO,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
        return self

    def heartbeat(self) -> dict:
        """The builder's heartbeat (arena.leaderboard.builder), {} before its first."""
        try:
            return json.loads((self.instance / "builder-heartbeat.json").read_text())
        except (OSError, ValueError):
            return {}

    def __exit__(self, *exc_info) -> None:
        if self.builder is not None and self.builder.poll() is None:
            self.builder.terminate()
            try:
                self.builder.wait(timeout=60)  # after the build in progress
            except subprocess.TimeoutExpired:
                self.builder.kill()
                self.builder.wait(timeout=5)
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)  # a test server: no need to wait out keep-alive connections
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def tail(self, lines: int = 8) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def workers(self) -> list[int]:
        """The pids of the master's live worker processes."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def wait_for_workers(self, count: int | None = None, seconds: float = 20) -> list[int]:
        count = count or int(self.env["ARENA_WORKERS"])
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pids = self.workers()
            if len(pids) >= count:
                return pids
            time.sleep(0.05)
        raise AssertionError(f"gunicorn has {len(self.workers())} workers, not {count}: {self.tail()}")

    def log_text(self) -> str:
        text = self.log.read_text(errors="replace")
        if self.builder_log is not None and self.builder_log.exists():
            text += self.builder_log.read_text(errors="replace")
        return text


# ------------------------------------------------------------------------------------------------ data


@dataclass
class Arena:
    """What seed() made: the prompt the recorded models answer, and the battles waiting for votes, per voter."""

    prompt_id: int
    ready: dict[str, list[str]]  # voter -> ids of that voter's battles in state "ready"
    hanging_prompt_id: int | None = None


def seed(url: str, *, voters: int, battles_per_voter: int) -> Arena:
    """Migrate, add four recorded models answering one prompt, and battles already answered, ready to vote on."""
    from arena import db
    from arena.answer_style import style_counts
    from arena.models import Battle, Model, Prompt, RecordedAnswer

    db.upgrade(url)
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            prompt_id = connection.execute(
                insert(Prompt).values(text="Why is the sky blue?", category="knowledge").returning(Prompt.id)
            ).scalar_one()
            model_ids = []
            for name in ("Alpha", "Beta", "Gamma", "Delta"):
                model_ids.append(
                    connection.execute(
                        insert(Model)
                        .values(
                            name=name,
                            organization="Org",
                            kind="recorded",
                            status="active",
                            sampling_weight=1.0,
                            sampling_params={},
                            aliases=[],
                            source="arena",
                        )
                        .returning(Model.id)
                    ).scalar_one()
                )
                # (not naming the model: an answer that does is an identity leak, its votes not counted)
                answer = f"Rayleigh scattering makes short wavelengths dominate the sky ({len(model_ids)})."
                connection.execute(
                    insert(RecordedAnswer).values(
                        model_id=model_ids[-1],
                        prompt_id=prompt_id,
                        text=answer,
                        duration_ms=10.0,
                        **style_counts(answer),
                    )
                )
            ready: dict[str, list[str]] = {}
            rows = []
            for v in range(voters):
                voter = f"voter-{v:03d}-{secrets.token_hex(4)}"
                ready[voter] = []
                for k in range(battles_per_voter):
                    battle_id = secrets.token_urlsafe(16)
                    a, b = model_ids[k % 4], model_ids[(k + 1 + v) % 4 if (k + 1 + v) % 4 != k % 4 else (k + 2) % 4]
                    rows.append(
                        dict(
                            id=battle_id,
                            prompt_id=prompt_id,
                            prompt_text="Why is the sky blue?",
                            model_a_id=a,
                            model_b_id=b,
                            state="ready",
                            voter=voter,
                            flagged=False,
                            source="arena",
                            sampling_policy="uniform",
                        )
                    )
                    ready[voter].append(battle_id)
            connection.execute(insert(Battle), rows)
    finally:
        engine.dispose()
    return Arena(prompt_id=prompt_id, ready=ready)


def votes_in_database(url: str) -> Counter:
    """How many vote rows each battle has (the unique constraint says at most one; the tests check it anyway)."""
    from arena.models import Vote

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return Counter(connection.execute(select(Vote.battle_id)).scalars())
    finally:
        engine.dispose()


@functools.cache
def _cookie_serializer():
    """Flask's session serializer under the service's secret key. Made once, in the thread that first asks
    (VoteStream.start, the test's own): building a Flask app inside voter threads hit CPython 3.11's
    "AST constructor recursion depth mismatch" on a busy machine."""
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    app = Flask("cookie")
    app.secret_key = SECRET_KEY
    return SecureCookieSessionInterface().get_signing_serializer(app)


def voter_cookie(voter: str) -> str:
    """The signed session cookie the service would have given this voter (same secret key, same serializer)."""
    return _cookie_serializer().dumps({"voter": voter})


# ------------------------------------------------------------------------------------------------ voters


@dataclass
class Outcome:
    battle_id: str
    status: int | None  # None: no HTTP answer at all (connection reset, timeout)
    code: str | None  # the error body's code, when there is one
    at: float
    seconds: float


@dataclass
class VoteStream:
    """Voters casting their seeded battles' votes from several threads until told to stop or out of battles."""

    bases: list[str]
    arena: Arena
    threads: int = 8
    pause: float = 0.0  # seconds between one voter's votes
    timeout: float = 10.0
    spread: bool = False  # each voter's votes go to the bases in turn (else each voter keeps to one base)
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _cookies: dict[str, str] = field(default_factory=dict)

    def start(self) -> "VoteStream":
        voters = list(self.arena.ready)
        self._cookies = {voter: voter_cookie(voter) for voter in voters}  # here, never in the voter threads
        for t in range(self.threads):
            mine = voters[t :: self.threads]
            thread = threading.Thread(target=self._run, args=(t, mine), daemon=True, name=f"voter-{t}")
            self._workers.append(thread)
            thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._workers:
            thread.join(self.timeout + 5)
        return self.outcomes

    def wait(self, seconds: float) -> list[Outcome]:
        for thread in self._workers:
            thread.join(seconds)
        return self.stop()

    def _run(self, index: int, voters: list[str]) -> None:
        winners = ("a", "b", "tie", "bothbad")
        clients = {}
        try:
            for v, voter in enumerate(voters):
                bases = self.bases if self.spread else [self.bases[(index + v) % len(self.bases)]]
                clients[voter] = [
                    httpx.Client(base_url=base, timeout=self.timeout, cookies={"session": self._cookies[voter]})
                    for base in bases
                ]
            queue = [(voter, battle) for voter in voters for battle in self.arena.ready[voter]]
            # interleave voters, as many voters would
            queue.sort(key=lambda item: self.arena.ready[item[0]].index(item[1]))
            for n, (voter, battle_id) in enumerate(queue):
                if self._stop.is_set():
                    return
                started = time.monotonic()
                status = code = None
                try:
                    choices = clients[voter]
                    response = choices[n % len(choices)].post(
                        f"/api/v1/battles/{battle_id}/vote", json={"winner": winners[n % 4]}
                    )
                    status = response.status_code
                    if status >= 400:
                        try:
                            code = response.json()["error"]["code"]
                        except (ValueError, KeyError, TypeError):
                            code = "(not the JSON error shape)"
                except httpx.HTTPError as error:
                    code = type(error).__name__
                self.outcomes.append(Outcome(battle_id, status, code, started, time.monotonic() - started))
                if self.pause:
                    time.sleep(self.pause)
        finally:
            for choices in clients.values():
                for client in choices:
                    client.close()


def accepted(outcomes: list[Outcome]) -> set[str]:
    return {o.battle_id for o in outcomes if o.status is not None and 200 <= o.status < 300}


def check_no_vote_lost_or_doubled(outcomes: list[Outcome], url: str) -> Counter:
    """Every vote answered 2xx is in the database exactly once; no battle has two votes. Returns the statuses."""
    stored = votes_in_database(url)
    ok = accepted(outcomes)
    lost = sorted(ok - set(stored))
    assert not lost, f"{len(lost)} accepted votes are not in the database, e.g. {lost[:3]}"
    doubled = {battle: n for battle, n in stored.items() if n != 1}
    assert not doubled, f"battles with more than one vote: {doubled}"
    return Counter((o.status, o.code) for o in outcomes)


def wait_until(predicate, seconds: float, what: str, step: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"not within {seconds:g} s: {what}")
