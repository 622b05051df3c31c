"""Answers from models: streamed from OpenAI-compatible endpoints, or replayed from recorded text.

Both are plain iterators of text deltas, so a battle can run two of them side by side in threads and forward
what they yield. `stream_chat` raises `ProviderError` with a `kind` the battle code can act on:

    connect      the endpoint could not be reached (refused, unknown host, TLS failure, bad URL)
    timeout      connecting, the first token, a read, or the whole answer took too long
    http         the endpoint answered with a non-2xx status (`status` holds it)
    garbage      the answer was not OpenAI's chat format (malformed SSE or JSON)
    empty        the answer completed without any content
    interrupted  the stream was cut before [DONE] or a finish_reason, or reported an error mid-stream

Messages name the URL and are meant for operators and logs, never for voters.

Deadlines are wall-clock and precise: a shared watchdog thread shuts the socket of a stream whose first-token or
total deadline passes while it waits for bytes, instead of letting it wait out a whole read timeout.
"""

from __future__ import annotations

import codecs
import heapq
import itertools
import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator

import httpcore
import httpx

KINDS = frozenset({"connect", "timeout", "http", "garbage", "empty", "interrupted"})

# Sized for hundreds of concurrent streams; idle connections beyond the keep-alive count are closed.
POOL_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
# After [DONE] or a finish_reason the answer is complete: wait at most this long for the body to end cleanly
# (so the connection can be reused), never fail the answer over it.
DRAIN_SECONDS = 1.0
# Bytes of an error body kept for the message, and the most a non-streamed answer may weigh.
_ERROR_EXCERPT_BYTES = 2048
_MAX_COMPLETION_BYTES = 1 << 20
# Words with the whitespace that follows them; whitespace-only text is one chunk. Joined, the chunks are the text.
_WORDS = re.compile(r"\s*\S+\s*|\s+")
_SSE_FIELDS = frozenset({"data", "event", "id", "retry"})


class ProviderError(Exception):
    """A model endpoint failed; `kind` is one of KINDS, `status` the HTTP status for kind "http"."""

    def __init__(self, kind: str, message: str, *, status: int | None = None):
        if kind not in KINDS:
            raise ValueError(f"unknown ProviderError kind {kind!r}")
        super().__init__(message)
        self.kind, self.message, self.status = kind, message, status

    def __repr__(self) -> str:
        return f"ProviderError({self.kind!r}, {self.message!r})"


# -- the shared HTTP client ------------------------------------------------------------------------------------
_client: httpx.Client | None = None
_client_lock = threading.Lock()


def shared_client() -> httpx.Client:
    """The process-wide pooled client, created on first use (so each forked worker makes its own)."""
    global _client
    with _client_lock:
        if _client is None or _client.is_closed:
            _client = httpx.Client(
                limits=POOL_LIMITS, follow_redirects=False, headers={"User-Agent": "arena-providers"}
            )
        return _client


class _VettedBackend(httpcore.SyncBackend):
    """A network backend that dials only addresses `vet` accepts, vetted at the moment of connecting.

    Checking a host's addresses before a request leaves a window: a host under someone else's control can
    resolve to a public address for the check and to a metadata or private one for the connection that follows
    (DNS rebinding). Here the addresses are resolved once, every one is vetted, and the connection goes to those
    very addresses, so what was checked is what is called. TLS still verifies the certificate against the host
    name (httpcore starts TLS with the name, not the address).
    """

    def __init__(self, vet: Callable[[str], str | None]):
        self._vet = vet

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as error:
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {error}") from error
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        for address in addresses:
            problem = self._vet(address)
            if problem:
                raise httpcore.ConnectError(f"the connection to {host!r} was refused: {problem}")
        failure = httpcore.ConnectError(f"{host!r} has no address")
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as error:
                failure = error
        raise failure


_vetted_clients: dict[object, httpx.Client] = {}


def vetted_client(key: object, vet: Callable[[str], str | None]) -> httpx.Client:
    """A pooled client, one per `key` and process, that connects only to addresses `vet` accepts (see
    `_VettedBackend`); `vet(address)` returns why an address is refused, or None."""
    with _client_lock:
        client = _vetted_clients.get(key)
        if client is None or client.is_closed:
            transport = httpx.HTTPTransport(limits=POOL_LIMITS)
            # httpx has no public way to pass a network backend; its transport wraps an httpcore pool, rebuilt
            # here with the same limits and the vetting backend.
            transport._pool = httpcore.ConnectionPool(
                ssl_context=httpx.create_ssl_context(),
                max_connections=POOL_LIMITS.max_connections,
                max_keepalive_connections=POOL_LIMITS.max_keepalive_connections,
                keepalive_expiry=POOL_LIMITS.keepalive_expiry,
                network_backend=_VettedBackend(vet),
            )
            client = _vetted_clients[key] = httpx.Client(
                transport=transport, follow_redirects=False, headers={"User-Agent": "arena-providers"}
            )
        return client


def chat_completions_url(base_url: str) -> str:
    """`{base_url}/chat/completions`; a base URL that already ends there is taken as it is."""
    base = base_url.rstrip("/")
    return base if base.endswith("/chat/completions") else base + "/chat/completions"


# -- deadlines -------------------------------------------------------------------------------------------------
class _Watchdog:
    """One daemon thread that fires `_Deadline`s whose time has come."""

    def __init__(self):
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Deadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def schedule(self, when: float, deadline: "_Deadline") -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="arena-provider-deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        _, _, due = heapq.heappop(self._heap)
                        break
                    self._cond.wait(self._heap[0][0] - now if self._heap else None)
            due.fire()


_watchdog = _Watchdog()


class _Deadline:
    """The deadline of one response; when it passes while the response is open, its socket is shut down.

    Shutting the socket wakes a read blocked on it, which then fails; `expired` tells the reader why. The socket
    is let go (`release`) before the connection can return to the pool, so a pooled connection that another
    request now uses is never touched.
    """

    def __init__(self, response: httpx.Response, when: float):
        self._lock = threading.Lock()
        self.when = when
        self.expired = False
        stream = response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        self._sock = sock if isinstance(sock, socket.socket) else None
        if self._sock is not None:
            response.stream = _ReleasingStream(response.stream, self)
            _watchdog.schedule(when, self)

    def move(self, when: float) -> None:
        with self._lock:
            self.when = when
            if self._sock is not None:
                _watchdog.schedule(when, self)

    def passed(self) -> bool:
        return time.monotonic() >= self.when

    def release(self) -> None:
        with self._lock:
            self._sock = None

    def fire(self) -> None:
        with self._lock:
            if self._sock is None or time.monotonic() < self.when:
                return  # released, or moved later (a later entry is scheduled)
            self.expired = True
            try:
                # The plain socket's shutdown, also for TLS: it cuts the connection without touching SSL state.
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock = None


class _ReleasingStream(httpx.SyncByteStream):
    """A response body that lets its deadline go before the connection is released to the pool."""

    def __init__(self, inner: httpx.SyncByteStream, deadline: _Deadline):
        self._inner, self._deadline = inner, deadline

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        self._deadline.release()
        self._inner.close()


# -- streaming chat --------------------------------------------------------------------------------------------
def stream_chat(
    base_url: str,
    model: str,
    messages: list[dict],
    *,
    api_key: str | None = None,
    params: dict | None = None,
    connect_timeout: float = 5.0,
    first_token_timeout: float = 30.0,
    total_timeout: float = 120.0,
    read_timeout: float | None = None,
    client: httpx.Client | None = None,
) -> Iterator[str]:
    """Stream one chat completion from an OpenAI-compatible endpoint, yielding the text deltas as they arrive.

    POSTs `{base_url}/chat/completions` with `stream: true`; `params` (temperature, max_tokens, top_p, ...) are
    sent as they are, but cannot replace model, messages or stream. The request starts at the first `next()`.
    Timeouts, in seconds: `connect_timeout` to open the connection (and to wait for a pooled one);
    `first_token_timeout` from the start to the first non-empty delta; `total_timeout` from the start to the
    end of the answer; `read_timeout` (default and at most `first_token_timeout`) the longest silence allowed
    between two reads. Raises ProviderError (see the module docstring for the kinds). Closing the iterator early
    closes the connection.
    """
    url = chat_completions_url(base_url)
    body = {**(params or {}), "model": model, "messages": list(messages), "stream": True}
    headers = {"Accept": "text/event-stream"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    per_read = min(read_timeout or first_token_timeout, first_token_timeout, total_timeout)
    timeout = httpx.Timeout(connect=connect_timeout, read=per_read, write=per_read, pool=connect_timeout)

    started = time.monotonic()
    first_token_by = started + min(first_token_timeout, total_timeout)
    answer_by = started + total_timeout
    deadline: _Deadline | None = None
    answered = False  # a non-empty delta was yielded
    complete = False  # [DONE] or a finish_reason was seen

    def timed_out() -> ProviderError:
        if not answered and time.monotonic() < first_token_by:
            return ProviderError("timeout", f"{url} went silent for {per_read:g} s before its first token")
        if not answered:
            return ProviderError("timeout", f"{url} sent no answer within {first_token_timeout:g} s")
        if time.monotonic() >= answer_by:
            return ProviderError("timeout", f"{url} did not finish its answer within {total_timeout:g} s")
        return ProviderError("timeout", f"{url} went silent for {per_read:g} s in the middle of its answer")

    try:
        with (client or shared_client()).stream("POST", url, json=body, headers=headers, timeout=timeout) as response:
            deadline = _Deadline(response, first_token_by)
            if not response.is_success:
                raise _status_error(response, url)
            if response.headers.get("content-type", "").startswith("application/json"):
                # The endpoint ignored stream: true and sent the whole completion at once.
                text = _completion_text(_read_json(response, url, deadline), url)
                if not text:
                    raise ProviderError("empty", f"{url} answered with no content")
                complete = True
                yield text
                return
            for data in _sse_data(_lines(response.iter_bytes()), url):
                if complete:
                    continue  # drain what follows the end of the answer, so the connection can be reused
                if data == "[DONE]":
                    complete = True
                    deadline.move(min(answer_by, time.monotonic() + DRAIN_SECONDS))
                    continue
                delta, finished = _chunk_delta(data, url)
                if deadline.passed():
                    raise timed_out()
                if delta:
                    if not answered:
                        answered = True
                        deadline.move(answer_by)
                    yield delta
                if finished:
                    complete = True
                    deadline.move(min(answer_by, time.monotonic() + DRAIN_SECONDS))
    except (ProviderError, httpx.HTTPError, OSError) as error:
        if complete:
            return  # the answer was whole; only what followed its end went wrong
        if isinstance(error, ProviderError):
            raise
        if isinstance(error, (httpx.TimeoutException, httpx.PoolTimeout)) or (deadline and deadline.expired):
            if isinstance(error, (httpx.ConnectTimeout, httpx.PoolTimeout)):
                raise ProviderError("timeout", f"connecting to {url} took more than {connect_timeout:g} s") from error
            raise timed_out() from error
        raise _transport_error(error, url, responded=deadline is not None) from error
    if not complete:
        raise ProviderError(
            "interrupted",
            f"the stream from {url} ended before [DONE]" + ("" if answered else " and without any content"),
        )
    if not answered:
        raise ProviderError("empty", f"{url} completed its answer without any content")


def _lines(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 lines of a byte stream, ended by \n or \r\n."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    for chunk in chunks:
        *lines, pending = (pending + decoder.decode(chunk)).split("\n")
        for line in lines:
            yield line.removesuffix("\r")
    pending += decoder.decode(b"", final=True)
    if pending:
        yield pending.removesuffix("\r")


def _sse_data(lines: Iterable[str], url: str) -> Iterator[str]:
    """The data of each Server-Sent Event (multi-line data joined by \\n); comments and other fields skipped."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue  # a comment, often a keep-alive
        field, colon, value = line.partition(":")
        if not colon or field not in _SSE_FIELDS:
            raise ProviderError("garbage", f"{url} sent a line that is not Server-Sent Events: {_excerpt(line)}")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def _chunk_delta(data: str, url: str) -> tuple[str, bool]:
    """(content delta, finished) from one chat.completion.chunk."""
    try:
        chunk = json.loads(data)
    except ValueError:
        raise ProviderError("garbage", f"{url} sent an event that is not JSON: {_excerpt(data)}") from None
    if not isinstance(chunk, dict):
        raise ProviderError("garbage", f"{url} sent an event that is not a JSON object: {_excerpt(data)}")
    if "error" in chunk:
        raise ProviderError("interrupted", f"{url} reported an error mid-stream: {_error_message(chunk)}")
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise ProviderError("garbage", f"{url} sent a chunk without choices: {_excerpt(data)}")
    choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
    if choice is None:
        return "", False  # e.g. a final usage chunk with no choices
    delta = choice.get("delta") or {}
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise ProviderError("garbage", f"{url} sent a delta whose content is not text: {_excerpt(data)}")
    return content or "", choice.get("finish_reason") is not None


# -- errors ----------------------------------------------------------------------------------------------------
def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _error_message(payload: dict) -> str:
    error = payload.get("error")
    if isinstance(error, dict) and error.get("message"):
        return _excerpt(str(error["message"]))
    return _excerpt(json.dumps(error))


def _status_error(response: httpx.Response, url: str) -> ProviderError:
    """ProviderError("http") naming the status and the start of the body (the error's message, if JSON)."""
    raw = b""
    try:
        for chunk in response.iter_bytes():
            raw += chunk
            if len(raw) >= _ERROR_EXCERPT_BYTES:
                break
    except (httpx.HTTPError, OSError):
        pass  # the status is the news; a body we cannot read adds nothing
    text = raw[:_ERROR_EXCERPT_BYTES].decode("utf-8", errors="replace")
    try:
        payload = json.loads(text)
        detail = _error_message(payload) if isinstance(payload, dict) and "error" in payload else _excerpt(text)
    except ValueError:
        detail = _excerpt(text)
    status = response.status_code
    return ProviderError("http", f"{url} answered HTTP {status}" + (f": {detail}" if detail else ""), status=status)


def _transport_error(error: Exception, url: str, *, responded: bool) -> ProviderError:
    if not responded:
        if isinstance(error, httpx.RemoteProtocolError):
            return ProviderError("interrupted", f"{url} closed the connection without answering ({error})")
        if isinstance(error, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
            return ProviderError("connect", f"{url} is not a usable http(s) URL ({error})")
        return ProviderError("connect", f"cannot connect to {url}: {error or type(error).__name__}")
    return ProviderError("interrupted", f"the stream from {url} was cut: {error or type(error).__name__}")


# -- non-streamed completions ----------------------------------------------------------------------------------
def _read_json(response: httpx.Response, url: str, deadline: _Deadline):
    raw = b""
    for chunk in response.iter_bytes():
        raw += chunk
        if len(raw) > _MAX_COMPLETION_BYTES:
            raise ProviderError("garbage", f"{url} sent more than {_MAX_COMPLETION_BYTES} bytes for one answer")
        if deadline.passed():
            raise httpx.ReadTimeout("deadline passed while reading the answer")
    try:
        return json.loads(raw)
    except ValueError:
        raise ProviderError(
            "garbage",
            f"{url} answered with something that is not JSON: {_excerpt(raw[:400].decode('utf-8', errors='replace'))}",
        ) from None


def _completion_text(payload, url: str) -> str:
    """The text of a chat.completion object (possibly empty); garbage if it is not one."""
    try:
        message = payload["choices"][0]["message"]
        content = message.get("content")
    except (TypeError, KeyError, IndexError, AttributeError):
        raise ProviderError(
            "garbage", f"{url} answered with JSON that is not a chat completion: {_excerpt(json.dumps(payload))}"
        ) from None
    if content is not None and not isinstance(content, str):
        raise ProviderError("garbage", f"{url} answered with content that is not text")
    return content or ""


def check_endpoint(
    base_url: str,
    model: str,
    *,
    api_key: str | None = None,
    timeout: float = 10.0,
    system_prompt: str | None = None,
    params: dict | None = None,
    client: httpx.Client | None = None,
) -> None:
    """One short real request (non-streamed, max_tokens 8) to check that an endpoint serves `model`.

    The request carries the model's system prompt and sampling parameters as battles will send them, so an
    endpoint that refuses them fails here, not in front of voters. Returns None when the endpoint answers with
    a chat completion, even an empty one (a model that thinks first may spend 8 tokens before saying anything);
    raises ProviderError otherwise. `timeout` bounds the whole call.
    """
    url = chat_completions_url(base_url)
    messages = [{"role": "user", "content": "Reply with the single word: ok"}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    body = {**(params or {}), "model": model, "messages": messages, "max_tokens": 8, "stream": False}
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    deadline: _Deadline | None = None
    try:
        with (client or shared_client()).stream(
            "POST", url, json=body, headers=headers, timeout=httpx.Timeout(timeout)
        ) as response:
            deadline = _Deadline(response, time.monotonic() + timeout)
            if not response.is_success:
                raise _status_error(response, url)
            _completion_text(_read_json(response, url, deadline), url)
    except ProviderError:
        raise
    except (httpx.HTTPError, OSError) as error:
        if isinstance(error, httpx.TimeoutException) or (deadline and deadline.expired):
            raise ProviderError("timeout", f"{url} did not answer within {timeout:g} s") from error
        raise _transport_error(error, url, responded=deadline is not None) from error


# -- recorded answers ------------------------------------------------------------------------------------------
def replay_recorded(
    text: str,
    duration_ms: float | None,
    *,
    speed: float = 1.0,
    max_seconds: float = 8.0,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[str]:
    """Yield a recorded answer in word-sized chunks, spread evenly over its recorded duration.

    The replay lasts duration_ms / 1000 / speed seconds, at most `max_seconds`; each chunk waits its equal
    share before it is yielded. With `max_seconds` 0 or no known duration the chunks come without delay.
    The chunks joined are exactly `text`, whitespace included.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    chunks = _WORDS.findall(text)
    seconds = 0.0
    if duration_ms and duration_ms > 0 and max_seconds > 0:
        seconds = min(duration_ms / 1000.0 / speed, max_seconds)
    pause = seconds / len(chunks) if chunks else 0.0
    for chunk in chunks:
        if pause:
            sleep(pause)
        yield chunk
