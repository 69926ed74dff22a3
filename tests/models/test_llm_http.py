"""The HTTP backend against a stub (garbage, slow, 401) and against a real llama-cpp-python server on localhost."""
from __future__ import annotations

import datetime as dt
import email.utils
import json
import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from models import judge
from models.enrichment import run_batch
from models.item_topics import ItemTopics, item_request
from models.http_retry import MAX_BACKOFF_S, full_jitter_s, retry_after_s
from models.llm import LLMError, OpenAICompatible
from tests.models.conftest import StoredCache
from tests.models.llm_server import llama_server as start_llama_server

GARBAGE = "Sure! Here are the topics: science, space {"
SECRET = "sk-test-never-shown"


class Stub:
    """A chat-completions endpoint that misbehaves on purpose; `mode` picks how, `posts` counts requests.
    `script` holds (status, headers) answers given, in order, before `mode` applies."""

    def __init__(self) -> None:
        self.mode = "garbage"
        self.script: list[tuple[int, dict[str, str]]] = []
        self.posts = 0
        self.authorizations: list[str] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                stub.posts += 1
                stub.authorizations.append(self.headers.get("Authorization", ""))
                self.rfile.read(int(self.headers["Content-Length"]))
                if stub.mode == "slow":
                    time.sleep(1.0)
                status, body = (401, {"error": "bad key"}) if stub.mode == "unauthorized" else (200, {
                    "choices": [{"message": {"role": "assistant", "content": GARBAGE}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 30, "completion_tokens": 12},
                })
                headers: dict[str, str] = {}
                if stub.script:
                    status, headers = stub.script.pop(0)
                    body = {"error": f"scripted {status}"}
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as the timeout test intends

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture()
def stub() -> Iterator[Stub]:
    server = Stub()
    thread = threading.Thread(target=server.server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def requests(count: int) -> list:
    return [item_request({"item_id": f"i{n}", "item_type": "podcast", "title": f"Show {n}"}) for n in range(count)]


def test_garbage_is_retried_then_recorded_with_raw_text(stub: Stub, cache: StoredCache) -> None:
    with OpenAICompatible(stub.base_url, "stub", SECRET, max_retries=1, backoff_s=0.01, max_concurrency=2) as llm:
        result = run_batch(llm, requests(3), cache, budget=10, attempts=2)
    assert stub.posts == 3 * 2  # every request asked twice, none given up on the transport side
    assert [r.status for r in result.results] == ["failed"] * 3
    assert {r.raw_text for r in result.results} == {GARBAGE}
    assert (result.failures, result.backend_errors, result.prompt_tokens) == (3, 0, 3 * 2 * 30)
    stored = cache.con.execute("select distinct status, raw_text from enrich.llm_cache").fetchall()
    assert stored == [("failed", GARBAGE)]
    assert set(stub.authorizations) == {f"Bearer {SECRET}"}


def test_timeouts_are_retried_then_the_batch_ends_with_work_deferred(stub: Stub, cache: StoredCache) -> None:
    stub.mode = "slow"
    with OpenAICompatible(stub.base_url, "stub", timeout_s=0.2, max_retries=2, backoff_s=0.01, max_concurrency=1) as llm:
        result = run_batch(llm, requests(4), cache, budget=10, max_backend_errors=2)
    assert stub.posts == 2 * 3  # two requests, each tried 1 + max_retries times
    assert result.backend_errors == 2 and len(result.deferred) == 2
    assert all("timed out" in (r.error or "") for r in result.results)
    assert cache.con.execute("select count(*) from enrich.llm_cache").fetchone() == (0,)


def test_api_key_stays_out_of_errors_and_repr(stub: Stub) -> None:
    stub.mode = "unauthorized"
    with OpenAICompatible(stub.base_url, "stub", SECRET, max_retries=3, backoff_s=0.01) as llm:
        with pytest.raises(LLMError, match="answered 401") as failure:
            llm.complete([{"role": "user", "content": "hi"}], {}, max_tokens=4, temperature=0.0, seed=0)
        assert SECRET not in str(failure.value) + failure.value.raw_text + repr(llm)
    assert stub.posts == 1  # a wrong key is not worth retrying


HI = [{"role": "user", "content": "hi"}]


def ask(llm: OpenAICompatible) -> str:
    return llm.complete(HI, {}, max_tokens=4, temperature=0.0, seed=0).text


def test_429_waits_as_long_as_retry_after_says(stub: Stub) -> None:
    stub.script = [(429, {"Retry-After": "2"})]
    sleeps: list[float] = []
    with OpenAICompatible(stub.base_url, "stub", max_retries=3, backoff_s=0.01, sleep=sleeps.append) as llm:
        assert ask(llm) == GARBAGE
    assert sleeps == [2.0] and stub.posts == 2


def test_503_with_an_http_date_waits_until_that_date(stub: Stub) -> None:
    when = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=6)
    stub.script = [(503, {"Retry-After": email.utils.format_datetime(when, usegmt=True)})]
    sleeps: list[float] = []
    with OpenAICompatible(stub.base_url, "stub", max_retries=3, backoff_s=0.01, sleep=sleeps.append) as llm:
        assert ask(llm) == GARBAGE
    assert len(sleeps) == 1 and 4.0 < sleeps[0] <= 6.0  # the date has whole seconds; the request took some


def test_backoff_is_jittered_within_its_exponential_bounds(stub: Stub) -> None:
    stub.script = [(500, {}), (502, {}), (429, {}), (504, {})]  # a 429 without Retry-After backs off too
    sleeps: list[float] = []
    with OpenAICompatible(stub.base_url, "stub", max_retries=4, backoff_s=1.0, sleep=sleeps.append,
                          rng=random.Random(7)) as llm:
        assert ask(llm) == GARBAGE
    assert len(sleeps) == 4 and all(0.0 <= wait <= 2.0 ** n for n, wait in enumerate(sleeps))
    rng = random.Random(0)
    draws = {retry: [full_jitter_s(retry, 1.0, rng) for _ in range(200)] for retry in range(1, 12)}
    assert all(0.0 <= wait <= min(MAX_BACKOFF_S, 2.0 ** (retry - 1)) for retry in draws for wait in draws[retry])
    assert max(draws[11]) > MAX_BACKOFF_S / 2 and min(draws[11]) < MAX_BACKOFF_S / 2  # capped, spread over [0, cap]
    assert len({round(wait, 6) for wait in draws[3]}) > 150  # jittered, not a fixed schedule


def test_retries_are_bounded_in_number_and_in_total_wait(stub: Stub) -> None:
    stub.script = [(503, {})] * 10
    sleeps: list[float] = []
    with OpenAICompatible(stub.base_url, "stub", max_retries=2, backoff_s=0.5, sleep=sleeps.append) as llm:
        with pytest.raises(LLMError, match="failed 3 times, last: status 503"):
            ask(llm)
    assert stub.posts == 3 and len(sleeps) == 2

    stub.script, stub.posts, sleeps[:] = [(429, {"Retry-After": "100"})], 0, []
    with OpenAICompatible(stub.base_url, "stub", max_retries=5, max_wait_s=10, sleep=sleeps.append) as llm:
        with pytest.raises(LLMError, match="would pass max_wait_s=10s"):
            ask(llm)
    assert stub.posts == 1 and sleeps == []


def test_retry_after_reads_seconds_and_dates_and_ignores_the_rest() -> None:
    now = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    assert retry_after_s("2", now) == 2.0 and retry_after_s(" 120 ", now) == 120.0
    assert retry_after_s("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert retry_after_s("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0  # a date already past: go now
    assert retry_after_s(None, now) is None and retry_after_s("soon", now) is None and retry_after_s("-3", now) is None


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real llama_cpp.server on the bundled GGUF (one thread, small context), stopped after the module."""
    with start_llama_server(tmp_path_factory.mktemp("llama_server") / "server.log") as server:
        yield server.base_url


@pytest.mark.slow
def test_llama_server_answers_schema_valid_json(llama_server: str, cache: StoredCache) -> None:
    items = [
        {"item_id": "p1", "item_type": "podcast", "title": "Rockets and Orbits", "creator": "Space Desk",
         "genres": ["science"], "description": "Engineers explain how rockets reach orbit."},
        {"item_id": "a1", "item_type": "audiobook", "title": "The Long Trial", "creator": "J. Marsh",
         "genres": ["true crime"], "description": "A courtroom story of a famous murder case."},
    ]
    with OpenAICompatible(llama_server, "smollm2", response_format="json_object", timeout_s=60) as llm:
        result = run_batch(llm, [item_request(item) for item in items], cache, budget=10)
    assert [r.status for r in result.results] == ["ok", "ok"], [r.error for r in result.results]
    assert all(ItemTopics.model_validate(r.output) for r in result.results)
    assert result.prompt_tokens > 0 and result.completion_tokens > 0


@pytest.mark.slow
def test_llama_server_returns_p_aligned_over_http(llama_server: str, cache: StoredCache) -> None:
    # llama_cpp.server keeps every position's logits by default (--logits_all true), so the verdict's
    # log-probabilities come back; a server that refuses them is covered in test_judge_logprobs.py
    request = judge.panel_request("u1", "top topics: science", {"item_id": "b1", "item_type": "audiobook",
                                                                "title": "Rockets and Orbits", "genres": ["science"]})
    with OpenAICompatible(llama_server, "smollm2", response_format="json_object", timeout_s=60) as llm:
        result = run_batch(llm, [request], cache, budget=1)
        assert llm.logprobs_supported
    (answer,) = result.results
    assert answer.status == "ok" and isinstance(answer.output["aligned"], bool), answer.error
    assert answer.choices is not None and answer.choices["true"] + answer.choices["false"] == pytest.approx(1.0)
    (p_aligned,) = judge.answers_frame(result.results)["p_aligned"].to_list()
    assert 0.0 <= p_aligned <= 1.0
