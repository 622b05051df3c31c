"""A small OpenAI-compatible chat server on loopback, for tests, benchmarks and trying endpoint models offline.

    python -m arena.loopback_model --port 8100 [--api-key KEY]

Standard library only. It answers `POST /v1/chat/completions` (and `/chat/completions`), streaming as
Server-Sent Events in OpenAI's chunk format or as one chat.completion object, and `GET /v1/models`. What a model
does is chosen by its name: the part before an optional ':' picks the behaviour, the rest is its argument
(`slow:2.5`, `leak:I am GPT-4`). See BEHAVIOURS.

In tests:

    with LoopbackModelServer() as server:
        stream_chat(server.base_url, "echo", messages)
        server.requests   # every request body received, in order

`close()` returns promptly even while clients wait on `never` or `stall-mid`: those handlers watch a stop event,
and every open connection is shut down when the server closes.
"""

from __future__ import annotations

import argparse
import hmac
import json
import re
import select
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEHAVIOURS = {
    "echo": "a deterministic answer derived from the whole conversation, in several chunks",
    "slow": "slow:SECONDS - like echo, its chunks spread over SECONDS",
    "leak": "leak:TEXT - answers with TEXT",
    "empty": "streams no content, then [DONE]",
    "garbage": "sends 'data: this is not json' lines",
    "error-mid": "a few chunks, then drops the connection without [DONE]",
    "stall-mid": "stall-mid[:SECONDS] - a few chunks (spread over SECONDS), then silence",
    "never": "accepts the request and never sends a byte",
    "http-500": "answers HTTP 500 with a JSON error",
}

# Words with the whitespace that follows them; whitespace-only text is one chunk. Joined, the chunks are the text.
_WORDS = re.compile(r"\s*\S+\s*|\s+")
# How often handlers that wait for nothing check for a closing server or a departed client.
_POLL_SECONDS = 0.1


def echo_answer(messages: list) -> str:
    """The `echo` answer: names the last user message, the user turn number and how many messages were sent."""
    user_turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last = _text(user_turns[-1].get("content")) if user_turns else ""
    return f"Answer to: {last} (turn {len(user_turns)}, {len(messages)} messages seen)"


def _text(content) -> str:
    """Message content as text: a string, or the text parts of OpenAI's list-of-parts form."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Never join handler threads on close: a `never` handler would hold close() until its client gave up.
    block_on_close = False
    request_queue_size = 1024

    def __init__(self, address, handler, owner: "LoopbackModelServer"):
        self.owner = owner
        self.stopping = threading.Event()
        self._open_lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self.accepted = 0
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
            self.accepted += 1
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request, client_address):
        # A client that leaves mid-answer is normal here; only a noisy server is asked to say so.
        if not self.owner.quiet:
            super().handle_error(request, client_address)

    def cut_open_connections(self) -> None:
        """Shut every open connection, which wakes handlers blocked reading the next request."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "arena-loopback-model/1"
    # Each SSE event is its own small write: without TCP_NODELAY, delayed ACKs hold events back ~40 ms.
    disable_nagle_algorithm = True
    # Idle keep-alive connections are dropped after this long; writes to a vanished client fail after it too.
    timeout = 300
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - the signature is BaseHTTPRequestHandler's
        if not self.server.owner.quiet:
            super().log_message(format, *args)

    # -- routing ---------------------------------------------------------------------------------------------
    def do_GET(self):
        if self.path.rstrip("/") not in ("/v1/models", "/models"):
            return self._error(404, "not_found", f"no route for GET {self.path}")
        if not self._authorised():
            return
        models = [
            {"id": name, "object": "model", "owned_by": "arena-loopback", "description": text}
            for name, text in BEHAVIOURS.items()
        ]
        self._json(200, {"object": "list", "data": models})

    def do_POST(self):
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._discard_body()
            return self._error(404, "not_found", f"no route for POST {self.path}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"null")
        except (ValueError, UnicodeDecodeError):
            return self._error(400, "invalid_json", "the request body is not JSON")
        if isinstance(body, dict):
            self.server.owner._record(body)
        if not self._authorised():
            return
        if (
            not isinstance(body, dict)
            or not isinstance(body.get("messages"), list)
            or not isinstance(body.get("model"), str)
        ):
            return self._error(400, "invalid_request", "expected an object with 'model' and a list of 'messages'")
        name, _, argument = body["model"].partition(":")
        if name not in BEHAVIOURS:
            return self._error(404, "model_not_found", f"the model {body['model']!r} does not exist")
        try:
            self._answer(name, argument, body)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            self.close_connection = True

    # -- behaviours --------------------------------------------------------------------------------------------
    def _answer(self, name: str, argument: str, body: dict) -> None:
        stream = bool(body.get("stream"))
        if name == "http-500":
            return self._error(500, "server_error", "the loopback model failed on purpose (http-500)")
        if name == "never":
            return self._wait_for_nothing()
        if name == "garbage":
            if not stream:
                return self._raw(200, "application/json", b"this is not json")
            self._start_stream()
            for _ in range(3):
                self._chunk(b"data: this is not json\n\n")
            return self._end_stream()

        if name == "leak":
            text = argument
        elif name == "empty":
            text = ""
        elif name in ("error-mid", "stall-mid"):
            text = f"A partial answer from {name} that will not end"
        else:
            text = echo_answer(body["messages"])
        pieces = _WORDS.findall(text)
        finish = "stop"
        limit = body.get("max_tokens")
        if isinstance(limit, int) and not isinstance(limit, bool) and 0 < limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        model = body["model"]
        if not stream:
            if name == "error-mid":
                self.close_connection = True  # drop the connection without a response
                return
            if name == "stall-mid":
                return self._wait_for_nothing()
            completion = {
                "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "".join(pieces)}, "finish_reason": finish}
                ],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(pieces), "total_tokens": len(pieces)},
            }
            return self._json(200, completion)

        spread = 0.0
        if name in ("slow", "stall-mid") and argument:
            try:
                spread = max(0.0, float(argument))
            except ValueError:
                return self._error(400, "invalid_model", f"{name} takes a number of seconds, not {argument!r}")
        delay = spread / len(pieces) if pieces else 0.0

        chunk_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def event(delta: dict, finish_reason) -> bytes:
            payload = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        self._start_stream()
        self._chunk(event({"role": "assistant", "content": ""}, None))
        for piece in pieces:
            if delay and self.server.stopping.wait(delay):
                self.close_connection = True
                return
            self._chunk(event({"content": piece}, None))
        if name == "error-mid":
            self.close_connection = True  # end without the final chunk: the client sees a cut body
            return
        if name == "stall-mid":
            return self._wait_for_nothing()
        self._chunk(event({}, finish))
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    def _wait_for_nothing(self) -> None:
        """Send nothing more until the client leaves or the server closes; then drop the connection."""
        self.close_connection = True
        connection = self.connection
        while not self.server.stopping.wait(_POLL_SECONDS):
            try:
                readable, _, _ = select.select([connection], [], [], 0)
                if readable and not connection.recv(1, socket.MSG_PEEK):
                    return  # the client has gone
            except (OSError, ValueError):
                return

    # -- HTTP plumbing -----------------------------------------------------------------------------------------
    def _authorised(self) -> bool:
        key = self.server.owner.api_key
        if key is None:
            return True
        header = self.headers.get("Authorization") or ""
        given = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if hmac.compare_digest(given.encode(), key.encode()):
            return True
        self._error(401, "invalid_api_key", "missing or wrong API key")
        return False

    def _discard_body(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)

    def _error(self, status: int, code: str, message: str) -> None:
        self._json(
            status,
            {
                "error": {
                    "message": message,
                    "type": "invalid_request_error" if status < 500 else "server_error",
                    "code": code,
                }
            },
        )

    def _json(self, status: int, payload: dict) -> None:
        self._raw(status, "application/json", json.dumps(payload).encode())

    def _raw(self, status: int, content_type: str, data: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


class LoopbackModelServer:
    """The loopback model server in a background thread; a context manager.

    `port=0` picks a free port. With `api_key`, every request must carry `Authorization: Bearer <api_key>`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, api_key: str | None = None, quiet: bool = True):
        self.api_key = api_key
        self.quiet = quiet
        self._requests: list[dict] = []
        self._requests_lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler, self)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, e.g. http://127.0.0.1:8100/v1."""
        return f"http://{self._httpd.server_address[0]}:{self.port}/v1"

    @property
    def requests(self) -> list[dict]:
        """A copy of every chat request body received so far, in arrival order."""
        with self._requests_lock:
            return list(self._requests)

    @property
    def connections_accepted(self) -> int:
        """How many TCP connections the server has accepted (a pooled client reuses one for many requests)."""
        return self._httpd.accepted

    def _record(self, body: dict) -> None:
        with self._requests_lock:
            self._requests.append(body)

    def start(self) -> "LoopbackModelServer":
        if self._thread is None:
            self._serving = True
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"loopback-model:{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until close() is called from another one (or KeyboardInterrupt)."""
        self._serving = True
        self._httpd.serve_forever(poll_interval=0.2)

    def close(self) -> None:
        """Stop accepting, wake every waiting handler and cut every open connection; returns promptly."""
        if self._closed:
            return
        self._closed = True
        self._httpd.stopping.set()
        if self._serving:
            self._httpd.shutdown()  # returns once the serving loop has stopped (at once if it already has)
        if self._thread is not None:
            self._thread.join()
        self._httpd.server_close()
        self._httpd.cut_open_connections()

    def __enter__(self) -> "LoopbackModelServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m arena.loopback_model",
        description="An OpenAI-compatible chat server on loopback, for tests and "
        "offline trials. Models: " + ", ".join(BEHAVIOURS) + ".",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY'")
    parser.add_argument("--quiet", action="store_true", help="do not log requests")
    args = parser.parse_args(argv)
    try:
        server = LoopbackModelServer(args.host, args.port, api_key=args.api_key, quiet=args.quiet)
    except OSError as error:
        parser.exit(1, f"cannot listen on {args.host}:{args.port}: {error.strerror or error}\n")
    print(f"loopback models at {server.base_url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
