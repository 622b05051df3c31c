"""Endpoint models and recorded answers, against the loopback model server (arena.loopback_model)."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from arena.egress.providers import KINDS, ProviderError, check_endpoint, replay_recorded, stream_chat
from arena.loopback_model import BEHAVIOURS, LoopbackModelServer, echo_answer

# Timing slack for assertions about how long something took: generous for a loaded CI machine, yet far below
# what the behaviour under test would take if it were broken.
SLACK = 0.4

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(scope="module")
def server():
    with LoopbackModelServer() as running:
        yield running


@pytest.fixture()
def keyed_server():
    with LoopbackModelServer(api_key="sk-right") as running:
        yield running


def requests_for(server, model: str) -> list[dict]:
    return [body for body in server.requests if body.get("model") == model]


def error_from(call) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        call()
    return caught.value


def timed(call) -> tuple[object, float]:
    started = time.monotonic()
    try:
        result = call()
    except ProviderError as error:
        result = error
    return result, time.monotonic() - started


def refused_url() -> str:
    """A loopback port with nothing listening: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# -- the loopback server ---------------------------------------------------------------------------------------
def test_models_endpoint_lists_every_behaviour(server):
    listing = httpx.get(f"{server.base_url}/models").json()
    assert listing["object"] == "list"
    assert {model["id"] for model in listing["data"]} == set(BEHAVIOURS)


def test_streams_openai_chunks_then_done(server):
    with httpx.stream(
        "POST", f"{server.base_url}/chat/completions", json={"model": "echo", "messages": HELLO, "stream": True}
    ) as response:
        assert response.headers["content-type"] == "text/event-stream"
        events = [line[len("data: ") :] for line in response.iter_lines() if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == echo_answer(HELLO) == "Answer to: hello there (turn 1, 1 messages seen)"
    assert len(chunks) > 4


def test_non_streaming_answer_is_a_chat_completion_and_honours_max_tokens(server):
    # Also at /chat/completions without the /v1 prefix.
    root = server.base_url.removesuffix("/v1")
    whole = httpx.post(f"{root}/chat/completions", json={"model": "echo", "messages": HELLO}).json()
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"] == {"role": "assistant", "content": echo_answer(HELLO)}
    assert whole["choices"][0]["finish_reason"] == "stop"
    short = httpx.post(
        f"{server.base_url}/chat/completions", json={"model": "echo", "messages": HELLO, "max_tokens": 2}
    ).json()
    assert short["choices"][0]["message"]["content"] == "Answer to: "
    assert short["choices"][0]["finish_reason"] == "length"


def test_bad_requests_get_json_errors(server):
    not_json = httpx.post(f"{server.base_url}/chat/completions", content=b"{oops")
    assert not_json.status_code == 400 and not_json.json()["error"]["code"] == "invalid_json"
    no_messages = httpx.post(f"{server.base_url}/chat/completions", json={"model": "echo"})
    assert no_messages.status_code == 400
    unknown = httpx.post(f"{server.base_url}/chat/completions", json={"model": "gpt-9", "messages": HELLO})
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"


def test_api_key_is_required_only_when_configured(server, keyed_server):
    assert "".join(stream_chat(server.base_url, "echo", HELLO, api_key="anything")) == echo_answer(HELLO)
    for key in (None, "sk-wrong"):
        error = error_from(lambda: list(stream_chat(keyed_server.base_url, "echo", HELLO, api_key=key)))
        assert (error.kind, error.status) == ("http", 401)
        assert "API key" in error.message
    assert httpx.get(f"{keyed_server.base_url}/models").status_code == 401
    assert "".join(stream_chat(keyed_server.base_url, "echo", HELLO, api_key="sk-right")) == echo_answer(HELLO)


def test_close_returns_at_once_with_a_never_connection_open():
    running = LoopbackModelServer().start()
    outcome = {}

    def wait_forever():
        try:
            list(stream_chat(running.base_url, "never", HELLO, first_token_timeout=30, total_timeout=60))
        except ProviderError as error:
            outcome["error"] = error

    client_thread = threading.Thread(target=wait_forever, daemon=True)
    client_thread.start()
    give_up = time.monotonic() + 5
    while not requests_for(running, "never") and time.monotonic() < give_up:
        time.sleep(0.01)
    assert requests_for(running, "never"), "the never request did not arrive"
    _, elapsed = timed(running.close)
    assert elapsed < SLACK
    client_thread.join(timeout=2)
    assert not client_thread.is_alive(), "the client was still waiting after the server closed"
    assert outcome["error"].kind == "interrupted"


def test_two_hundred_concurrent_streams_each_get_their_own_answer(server):
    """200 one-second streams at once through the shared client: all complete, in about one second."""
    count = 200

    def conversation(i):
        return [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": f"follow-up {i}"},
        ]

    def one(i):
        return "".join(
            stream_chat(server.base_url, "slow:1", conversation(i), first_token_timeout=10, total_timeout=20)
        )

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=count) as pool:
        answers = list(pool.map(one, range(count)))
    elapsed = time.monotonic() - started
    assert answers == [f"Answer to: follow-up {i} (turn 2, 4 messages seen)" for i in range(count)]
    assert elapsed < 1 + 3 * SLACK + 1, f"{count} streams of one second took {elapsed:.1f} s: not concurrent"
    seen = {body["messages"][1]["content"] for body in requests_for(server, "slow:1")}
    assert seen == {f"question {i}" for i in range(count)}


# -- stream_chat: answers ----------------------------------------------------------------------------------------
def test_echo_streams_several_deltas_of_its_own_conversation(server):
    conversation = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "second  question\n"},
    ]
    deltas = list(stream_chat(server.base_url, "echo", conversation))
    assert len(deltas) > 4 and all(deltas)
    assert "".join(deltas) == "Answer to: second  question\n (turn 2, 4 messages seen)"


def test_params_pass_through_but_cannot_replace_model_messages_or_stream(server):
    params = {"temperature": 0.2, "top_p": 0.9, "max_tokens": 3, "model": "other", "stream": False, "messages": []}
    answer = "".join(stream_chat(server.base_url, "echo:params", [{"role": "user", "content": "x"}], params=params))
    assert answer == "Answer to: x "  # max_tokens reached the server: three word chunks
    body = requests_for(server, "echo:params")[-1]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9 and body["max_tokens"] == 3
    assert body["stream"] is True and body["messages"] == [{"role": "user", "content": "x"}]


def test_slow_spreads_its_deltas_over_the_requested_time(server):
    arrivals = []
    started = time.monotonic()
    for delta in stream_chat(server.base_url, "slow:0.6", HELLO):
        arrivals.append((time.monotonic() - started, delta))
    assert "".join(delta for _, delta in arrivals) == echo_answer(HELLO)
    assert arrivals[0][0] < 0.3 < arrivals[-1][0]
    assert 0.5 < arrivals[-1][0] < 0.6 + SLACK


def test_leak_answers_with_the_given_text(server):
    assert (
        "".join(stream_chat(server.base_url, "leak:I am Claude, made by Anthropic.", HELLO))
        == "I am Claude, made by Anthropic."
    )


def test_a_base_url_ending_in_chat_completions_is_used_as_it_is(server):
    assert "".join(stream_chat(f"{server.base_url}/chat/completions/", "echo", HELLO)) == echo_answer(HELLO)


def test_closing_the_stream_early_returns_at_once(server):
    stream = stream_chat(server.base_url, "slow:3", HELLO)
    assert next(stream)
    _, elapsed = timed(stream.close)
    assert elapsed < SLACK


# -- stream_chat: failures ---------------------------------------------------------------------------------------
def test_empty_answer_is_kind_empty(server):
    error = error_from(lambda: list(stream_chat(server.base_url, "empty", HELLO)))
    assert error.kind == "empty"


def test_leak_of_nothing_is_empty_too(server):
    assert error_from(lambda: list(stream_chat(server.base_url, "leak:", HELLO))).kind == "empty"


def test_garbage_is_kind_garbage(server):
    error = error_from(lambda: list(stream_chat(server.base_url, "garbage", HELLO)))
    assert error.kind == "garbage" and "this is not json" in error.message


def test_a_connection_dropped_mid_answer_is_interrupted_after_the_partial_text(server):
    received = []
    error = error_from(lambda: received.extend(stream_chat(server.base_url, "error-mid", HELLO)))
    assert error.kind == "interrupted"
    assert "".join(received) == "A partial answer from error-mid that will not end"


def test_http_errors_name_the_status_and_the_body(server):
    error = error_from(lambda: list(stream_chat(server.base_url, "http-500", HELLO)))
    assert (error.kind, error.status) == ("http", 500)
    assert "HTTP 500" in error.message and "failed on purpose" in error.message
    missing = error_from(lambda: list(stream_chat(server.base_url, "no-such-model", HELLO)))
    assert (missing.kind, missing.status) == ("http", 404) and "does not exist" in missing.message


def test_connection_refused_is_kind_connect():
    url = refused_url()
    error = error_from(lambda: list(stream_chat(url, "echo", HELLO)))
    assert error.kind == "connect" and url in error.message


def test_a_url_that_is_not_http_is_kind_connect():
    assert error_from(lambda: list(stream_chat("ftp://example.invalid/v1", "echo", HELLO))).kind == "connect"


def test_connect_timeout():
    """A listener whose backlog is full drops new connection attempts, so connecting times out."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(8):
                filler = socket.socket()
                filler.setblocking(False)
                filler.connect_ex(("127.0.0.1", port))
                fillers.append(filler)
            error, elapsed = timed(
                lambda: list(stream_chat(f"http://127.0.0.1:{port}/v1", "echo", HELLO, connect_timeout=0.3))
            )
        finally:
            for filler in fillers:
                filler.close()
    assert isinstance(error, ProviderError) and error.kind == "timeout"
    assert "connecting" in error.message
    assert 0.25 < elapsed < 0.3 + SLACK


def test_first_token_timeout_when_nothing_comes(server):
    error, elapsed = timed(lambda: list(stream_chat(server.base_url, "never", HELLO, first_token_timeout=0.4)))
    assert isinstance(error, ProviderError) and error.kind == "timeout"
    assert "no answer within 0.4 s" in error.message
    assert 0.35 < elapsed < 0.4 + SLACK


def test_first_token_timeout_counts_only_non_empty_deltas(server):
    """slow:5 sends its role chunk (empty content) at once, its first word after about half a second."""
    error, elapsed = timed(lambda: list(stream_chat(server.base_url, "slow:5", HELLO, first_token_timeout=0.3)))
    assert isinstance(error, ProviderError) and error.kind == "timeout"
    assert 0.25 < elapsed < 0.3 + SLACK


def test_a_stall_after_the_first_tokens_times_out_after_the_read_timeout(server):
    received = []
    error, elapsed = timed(
        lambda: received.extend(
            stream_chat(server.base_url, "stall-mid", HELLO, first_token_timeout=5, read_timeout=0.3)
        )
    )
    assert isinstance(error, ProviderError) and error.kind == "timeout" and "silent for 0.3 s" in error.message
    assert "".join(received) == "A partial answer from stall-mid that will not end"
    assert 0.25 < elapsed < 0.3 + SLACK


def test_total_timeout_on_an_answer_that_keeps_coming(server):
    received = []
    error, elapsed = timed(
        lambda: received.extend(stream_chat(server.base_url, "slow:3", HELLO, first_token_timeout=2, total_timeout=0.8))
    )
    assert isinstance(error, ProviderError) and error.kind == "timeout" and "within 0.8 s" in error.message
    assert 0 < len(received) < len(echo_answer(HELLO).split())
    assert 0.75 < elapsed < 0.8 + SLACK


def test_total_timeout_is_kept_even_in_the_middle_of_a_read(server):
    """The stall starts at 0.4 s, the read timeout is 0.8 s: only the watchdog can end it at the 0.8 s deadline."""
    error, elapsed = timed(
        lambda: list(
            stream_chat(
                server.base_url, "stall-mid:0.4", HELLO, first_token_timeout=5, read_timeout=5, total_timeout=0.8
            )
        )
    )
    assert isinstance(error, ProviderError) and error.kind == "timeout" and "within 0.8 s" in error.message
    assert 0.75 < elapsed < 0.8 + 2 * SLACK  # the 5 s read timeout would have fired at 5.4 s at the earliest


def test_connections_are_reused_after_complete_answers(server):
    """A finished stream hands its connection back to the pool: twenty answers in a row use one connection."""
    before = server.connections_accepted
    with httpx.Client() as client:
        for i in range(20):
            conversation = [{"role": "user", "content": f"again {i}"}]
            answer = "".join(stream_chat(server.base_url, "echo", conversation, client=client))
            assert answer == echo_answer(conversation)
    assert server.connections_accepted - before == 1


def test_a_connection_cut_by_the_watchdog_is_not_reused(server):
    with httpx.Client() as client:
        for _ in range(3):
            error = error_from(
                lambda: list(stream_chat(server.base_url, "stall-mid:0.1", HELLO, total_timeout=0.3, client=client))
            )
            assert error.kind == "timeout"
            assert "".join(stream_chat(server.base_url, "echo", HELLO, client=client)) == echo_answer(HELLO)


def test_provider_error_kinds_are_a_closed_set():
    assert KINDS == {"connect", "timeout", "http", "garbage", "empty", "interrupted"}
    with pytest.raises(ValueError):
        ProviderError("oops", "not a kind")


# -- stream_chat: Server-Sent Events as other servers write them ------------------------------------------------
def chunk(content=None, finish=None, **extra) -> str:
    delta = {} if content is None else {"content": content}
    return "data: " + json.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})


def mock_client(body: bytes, content_type: str = "text/event-stream", status: int = 200) -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(
            lambda request: httpx.Response(status, headers={"content-type": content_type}, content=body)
        )
    )


SSE_CASES = {
    "crlf line ends, comments and a usage chunk without choices": (
        "\r\n".join(
            [
                ": keep-alive",
                "",
                chunk("Hel"),
                "",
                chunk("lo"),
                "",
                chunk(finish="stop"),
                "",
                'data: {"choices": [], "usage": {"total_tokens": 3}}',
                "",
                "data: [DONE]",
                "",
                "",
            ]
        ),
        "Hello",
    ),
    "a finish_reason without [DONE] is a complete answer": (
        "\n".join([chunk("Hi"), "", chunk(" there", finish="stop"), "", ""]),
        "Hi there",
    ),
    "[DONE] without a finish_reason is a complete answer": ("\n".join([chunk("Hi"), "", "data: [DONE]", "", ""]), "Hi"),
    "data: without a space, event and id fields": (
        "\n".join(
            [
                "event: message",
                "id: 1",
                'data:{"choices":[{"index":0,"delta":{"content":"x"}}]}',
                "",
                "data: [DONE]",
                "",
                "",
            ]
        ),
        "x",
    ),
    "junk after [DONE] is ignored": ("\n".join([chunk("ok"), "", "data: [DONE]", "", "<html>"]), "ok"),
}


@pytest.mark.parametrize("body, expected", SSE_CASES.values(), ids=SSE_CASES.keys())
def test_sse_variants(body, expected):
    assert "".join(stream_chat("http://model.test/v1", "m", HELLO, client=mock_client(body.encode()))) == expected


SSE_FAILURES = {
    "a line that is not SSE": ("<html>oops</html>\n", "garbage"),
    "a chunk without choices": ('data: {"id": 1}\n\n', "garbage"),
    "content that is not text": ('data: {"choices": [{"index": 0, "delta": {"content": 5}}]}\n\n', "garbage"),
    "an error event mid-stream": (chunk("Hi") + '\n\ndata: {"error": {"message": "overloaded"}}\n\n', "interrupted"),
    "cut before [DONE]": (chunk("Hi") + "\n\n", "interrupted"),
    "cut before anything": ("", "interrupted"),
    "only a finish_reason": (chunk(finish="stop") + "\n\ndata: [DONE]\n\n", "empty"),
}


@pytest.mark.parametrize("body, kind", SSE_FAILURES.values(), ids=SSE_FAILURES.keys())
def test_sse_failures(body, kind):
    client = mock_client(body.encode())
    assert error_from(lambda: list(stream_chat("http://model.test/v1", "m", HELLO, client=client))).kind == kind


def test_a_whole_completion_instead_of_a_stream_is_accepted():
    completion = {"choices": [{"index": 0, "message": {"role": "assistant", "content": "All at once."}}]}
    client = mock_client(json.dumps(completion).encode(), content_type="application/json")
    assert list(stream_chat("http://model.test/v1", "m", HELLO, client=client)) == ["All at once."]


# -- check_endpoint ----------------------------------------------------------------------------------------------
def test_check_endpoint_accepts_a_working_model_with_one_short_request(keyed_server):
    assert check_endpoint(keyed_server.base_url, "echo", api_key="sk-right") is None
    body = requests_for(keyed_server, "echo")[-1]
    assert body["stream"] is False and body["max_tokens"] <= 16 and body["messages"][0]["role"] == "user"


@pytest.mark.parametrize(
    "model, kind",
    [("http-500", "http"), ("no-such-model", "http"), ("garbage", "garbage"), ("error-mid", "interrupted")],
)
def test_check_endpoint_failures(server, model, kind):
    assert error_from(lambda: check_endpoint(server.base_url, model)).kind == kind


def test_check_endpoint_wrong_key_and_unreachable(keyed_server):
    wrong = error_from(lambda: check_endpoint(keyed_server.base_url, "echo", api_key="sk-wrong"))
    assert (wrong.kind, wrong.status) == ("http", 401)
    assert error_from(lambda: check_endpoint(refused_url(), "echo")).kind == "connect"


def test_check_endpoint_times_out(server):
    error, elapsed = timed(lambda: check_endpoint(server.base_url, "never", timeout=0.3))
    assert isinstance(error, ProviderError) and error.kind == "timeout"
    assert 0.25 < elapsed < 0.3 + SLACK


# -- replay_recorded ---------------------------------------------------------------------------------------------
TEXTS = [
    "",
    "one",
    "  leading and trailing  ",
    "Two\n\nparagraphs,\twith tabs.\n",
    "   ",
    "\n",
    "Ünïcödé — 中文 words ✓",
    "- a list\n- of items\n\n```python\nprint('code')\n```",
]


@pytest.mark.parametrize("text", TEXTS)
def test_replay_gives_back_exactly_the_recorded_text_in_word_sized_chunks(text):
    chunks = list(replay_recorded(text, 1000, sleep=lambda seconds: None))
    assert "".join(chunks) == text
    assert all(len(piece.split()) <= 1 for piece in chunks)
    assert len(chunks) == max(len(text.split()), 1 if text else 0)


def record_replay(text, duration_ms, **options):
    events = []
    for piece in replay_recorded(text, duration_ms, sleep=lambda seconds: events.append(seconds), **options):
        events.append(piece)
    return events


def test_replay_spreads_the_chunks_evenly_over_the_recorded_duration():
    events = record_replay("one two three four", 2000)
    # Each chunk waits its share first: the answer ends when the recording did.
    assert events == [0.5, "one ", 0.5, "two ", 0.5, "three ", 0.5, "four"]


@pytest.mark.parametrize(
    "duration_ms, options, total",
    [
        (2000, {"speed": 2.0}, 1.0),
        (2000, {"speed": 0.5}, 4.0),
        (60_000, {}, 8.0),
        (60_000, {"max_seconds": 3.0}, 3.0),
        (60_000, {"speed": 10.0, "max_seconds": 30.0}, 6.0),
    ],
)
def test_replay_duration_scales_with_speed_and_is_capped(duration_ms, options, total):
    delays = [e for e in record_replay("a b c d e f g h", duration_ms, **options) if isinstance(e, float)]
    assert len(delays) == 8
    assert sum(delays) == pytest.approx(total)
    assert max(delays) == pytest.approx(min(delays))


@pytest.mark.parametrize("duration_ms, options", [(None, {}), (0, {}), (5000, {"max_seconds": 0})])
def test_replay_without_delay(duration_ms, options):
    assert record_replay("no waiting here", duration_ms, **options) == ["no ", "waiting ", "here"]


def test_replay_rejects_a_speed_that_is_not_positive():
    with pytest.raises(ValueError):
        list(replay_recorded("text", 1000, speed=0))


def test_replay_really_sleeps_by_default():
    _, elapsed = timed(lambda: list(replay_recorded("a b c", 300)))
    assert 0.28 < elapsed < 0.3 + SLACK
