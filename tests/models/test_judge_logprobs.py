"""P(aligned) from token log-probabilities: both backends' response shapes, the deciding token, absent logprobs."""
from __future__ import annotations

import json
import math
from typing import Any

import httpx
import pytest

from models import judge
from models.enrichment import run_batch
from models.llm import Completion, OpenAICompatible, _completion, generate
from models.logprobs import TokenLogprob, choice_probabilities, parse_content
from warehouse.enrichment_tables import BufferedCache

PANEL_SCHEMA = judge.PanelVerdict.model_json_schema()
PAIRWISE_SCHEMA = judge.PairwiseJudgement.model_json_schema()

# Recorded from llama-cpp-python 0.3 (SmolLM2-135M, logits_all=True, top_logprobs=10, trimmed to 4 alternatives):
# values are numpy float32 there; the alternatives come from the raw logits, before the JSON grammar.
LOCAL_REPLY = {
    "choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": '{"aligned":true}'},
        "logprobs": {"refusal": None, "content": [
            {"token": '{"', "logprob": -6.488, "bytes": None, "top_logprobs": [
                {"token": "Yes", "logprob": -1.7, "bytes": None}, {"token": "True", "logprob": -1.92, "bytes": None}]},
            {"token": "aligned", "logprob": -8.79, "bytes": None, "top_logprobs": [
                {"token": "type", "logprob": -2.06, "bytes": None}]},
            {"token": '":', "logprob": -0.161, "bytes": None, "top_logprobs": [
                {"token": '":', "logprob": -0.16, "bytes": None}, {"token": '":"', "logprob": -2.86, "bytes": None}]},
            {"token": "true", "logprob": -1.442, "bytes": None, "top_logprobs": [
                {"token": "true", "logprob": -1.44, "bytes": None}, {"token": " true", "logprob": -1.63, "bytes": None},
                {"token": ' "', "logprob": -2.11, "bytes": None}, {"token": "false", "logprob": -2.7, "bytes": None},
                {"token": " false", "logprob": -3.01, "bytes": None}]},
            {"token": "}", "logprob": -0.509, "bytes": None, "top_logprobs": [
                {"token": "}", "logprob": -0.51, "bytes": None}]},
        ]},
    }],
    "usage": {"prompt_tokens": 126, "completion_tokens": 5},
}
# The OpenAI form (vLLM, hosted APIs): bytes given, the chosen token listed among its alternatives.
OPENAI_REPLY = {
    "choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": '{"aligned": false}'},
        "logprobs": {"content": [
            {"token": '{"', "logprob": -0.01, "bytes": [123, 34], "top_logprobs": [
                {"token": '{"', "logprob": -0.01, "bytes": [123, 34]}]},
            {"token": "aligned", "logprob": 0.0, "bytes": [97], "top_logprobs": [
                {"token": "aligned", "logprob": 0.0, "bytes": [97]}]},
            {"token": '":', "logprob": 0.0, "bytes": [34, 58], "top_logprobs": [
                {"token": '":', "logprob": 0.0, "bytes": [34, 58]}]},
            {"token": " false", "logprob": math.log(0.6), "bytes": [32, 102], "top_logprobs": [
                {"token": " false", "logprob": math.log(0.6), "bytes": [32, 102]},
                {"token": " true", "logprob": math.log(0.2), "bytes": [32, 116]},
                {"token": " maybe", "logprob": math.log(0.2), "bytes": [32, 109]}]},
            {"token": "}", "logprob": 0.0, "bytes": [125], "top_logprobs": []},
        ]},
    }],
    "usage": {"prompt_tokens": 90, "completion_tokens": 5},
}
PRECISION = 1e-9


def test_local_reply_gives_p_aligned_from_the_first_value_token() -> None:
    completion = _completion(LOCAL_REPLY, 0.1)
    assert [token.token for token in completion.tokens] == ['{"', "aligned", '":', "true", "}"]
    mass_true = math.exp(-1.442) + math.exp(-1.63)  # the chosen 'true' (its own logprob) and ' true'
    mass_false = math.exp(-2.7) + math.exp(-3.01)
    found = choice_probabilities(completion.tokens, PANEL_SCHEMA)
    assert found is not None
    assert found["true"] == pytest.approx(mass_true / (mass_true + mass_false), abs=PRECISION)  # about 0.79
    assert found["true"] + found["false"] == pytest.approx(1.0)


def test_openai_reply_renormalises_over_the_two_verdicts() -> None:
    completion = _completion(OPENAI_REPLY, 0.1)
    assert completion.text == '{"aligned": false}'
    found = choice_probabilities(completion.tokens, PANEL_SCHEMA)
    assert found == pytest.approx({"true": 0.25, "false": 0.75})  # ' maybe' is no verdict: left out


def test_a_token_holding_the_separator_and_the_value_is_read_past_the_separator() -> None:
    tokens = (TokenLogprob('{"aligned', -0.1, ()),
              TokenLogprob('": true', math.log(0.3), (('": false', math.log(0.6)), ('": t', math.log(0.1)))),
              TokenLogprob("}", 0.0, ()))
    assert choice_probabilities(tokens, PANEL_SCHEMA) == pytest.approx({"true": 0.4, "false": 0.6})


def test_string_verdicts_differ_after_the_shared_quote() -> None:
    tokens = (TokenLogprob('{"verdict": "', 0.0, ()),
              TokenLogprob("A", math.log(0.5), (("B", math.log(0.3)), ("t", math.log(0.1)), ("The", math.log(0.1)))),
              TokenLogprob('", "confidence": "low", "rationale": "x"}', 0.0, ()))
    found = choice_probabilities(tokens, PAIRWISE_SCHEMA)
    assert found == pytest.approx({"A": 0.5 / 0.9, "B": 0.3 / 0.9, "tie": 0.1 / 0.9})  # 'The' begins no verdict


def test_without_logprobs_there_is_no_probability_and_the_verdict_still_parses() -> None:
    bare = {"choices": [{"message": {"content": '{"aligned": true}'}, "finish_reason": "stop"}], "usage": {}}
    assert _completion(bare, 0.0).tokens == ()
    assert parse_content(None) == () and parse_content({"content": [{"token": "x"}]}) == ()  # malformed: none
    assert choice_probabilities((), PANEL_SCHEMA) is None
    unmatched = (TokenLogprob('{"aligned": ', 0.0, ()), TokenLogprob("yes", 0.0, (("no", -1.0),)))
    assert choice_probabilities(unmatched, PANEL_SCHEMA) is None
    assert choice_probabilities(_completion(LOCAL_REPLY, 0.0).tokens, {"properties": {"n": {"type": "integer"}}}) is None


class Recorded:
    """A chat model that answers with a recorded reply and notes what it was asked."""

    name = "recorded"
    max_concurrency = 1

    def __init__(self, reply: dict[str, Any]) -> None:
        self.reply = reply
        self.asked: list[int] = []

    def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int,
                 temperature: float, seed: int, top_logprobs: int = 0) -> Completion:
        self.asked.append(top_logprobs)
        return _completion(self.reply, 0.01)


def test_generate_and_the_cache_keep_p_aligned_beside_the_answer() -> None:
    model = Recorded(LOCAL_REPLY)
    request = judge.panel_request("u1", "plays by type: podcast 100%", {"item_id": "b1", "title": "Rome"})
    generation = generate(model, request.messages, request.output_type, max_tokens=request.max_tokens,
                          top_logprobs=request.top_logprobs)
    assert generation.status == "ok" and generation.output == {"aligned": True}
    assert generation.choices is not None and 0.78 < generation.choices["true"] < 0.80
    cache = BufferedCache({})
    first = run_batch(model, [request], cache, budget=5)
    again = run_batch(model, [request], BufferedCache({key: row for key, row in _stored(cache).items()}), budget=5)
    assert model.asked == [judge.TOP_LOGPROBS, judge.TOP_LOGPROBS]  # the second batch was answered from the cache
    assert again.results[0].from_cache and again.results[0].output == {"aligned": True}
    assert again.results[0].choices == pytest.approx(first.results[0].choices)
    frame = judge.answers_frame(again.results)
    assert frame["verdict"].to_list() == ["aligned"] and 0.78 < frame["p_aligned"].item() < 0.80


def _stored(cache: BufferedCache) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {(row["model"], row["prompt_version"], row["input_hash"]): row for row in cache.new_rows}


def test_a_model_without_the_keyword_is_still_asked_when_no_logprobs_are_wanted() -> None:
    class Plain:
        name, max_concurrency = "plain", 1

        def complete(self, messages: list[dict[str, str]], schema: dict[str, Any], *, max_tokens: int,
                     temperature: float, seed: int) -> Completion:
            return Completion('{"aligned": false}', 1, 1, 0.0, "stop")

    generation = generate(Plain(), [{"role": "user", "content": "?"}], judge.PanelVerdict, max_tokens=8)
    assert generation.output == {"aligned": False} and generation.choices is None


def test_http_backend_asks_for_logprobs_and_reads_them() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return httpx.Response(200, json=OPENAI_REPLY)

    model = OpenAICompatible("http://judge.test/v1", "judge-model", max_retries=0)
    model._client = httpx.Client(transport=httpx.MockTransport(answer))
    plain = model.complete([{"role": "user", "content": "?"}], PANEL_SCHEMA, max_tokens=8, temperature=0.0, seed=0)
    scored = model.complete([{"role": "user", "content": "?"}], PANEL_SCHEMA, max_tokens=8, temperature=0.0, seed=0,
                            top_logprobs=5)
    assert "logprobs" not in bodies[0] and "top_logprobs" not in bodies[0]
    assert bodies[1]["logprobs"] is True and bodies[1]["top_logprobs"] == 5
    assert len(plain.tokens) == len(scored.tokens) == 5  # parsed whenever the server sends them
    assert choice_probabilities(scored.tokens, PANEL_SCHEMA) == pytest.approx({"true": 0.25, "false": 0.75})
    model.close()


def test_http_backend_stops_asking_a_server_that_refuses_logprobs() -> None:
    bodies: list[dict[str, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        if "logprobs" in bodies[-1]:  # llama_cpp.server's answer without --logits_all
            return httpx.Response(500, json={"error": {
                "message": "logprobs is not supported for models created with logits_all=False"}})
        return httpx.Response(200, json={"choices": [{"message": {"content": '{"aligned": true}'},
                                                      "finish_reason": "stop"}], "usage": {}})

    model = OpenAICompatible("http://judge.test/v1", "judge-model", max_retries=3, sleep=lambda _: None)
    model._client = httpx.Client(transport=httpx.MockTransport(answer))
    for _ in range(2):
        completion = model.complete([{"role": "user", "content": "?"}], PANEL_SCHEMA, max_tokens=8, temperature=0.0,
                                    seed=0, top_logprobs=5)
        assert completion.text == '{"aligned": true}' and completion.tokens == ()
    assert ["logprobs" in body for body in bodies] == [True, False, False]  # refused once, not retried, not re-asked
    model.close()
