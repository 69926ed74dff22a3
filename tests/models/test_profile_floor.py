"""Template profiles (seven non-empty keys from the facts), the coarse signature narratives are cached on, usability."""
from __future__ import annotations

import json

import pytest

from models.profile_template import template_profile
from models.user_profiles import PROFILE_KEYS, TopItem, UserFacts, UserProfile, is_usable, profile_request, profile_signature


def facts(**changes: object) -> UserFacts:
    base = dict(
        user_id="u1", type_shares={"podcast": 0.62, "audiobook": 0.38}, top_topics=["history", "science", "true crime"],
        active_days=21, plays_per_active_day=3.4, peak_time_of_day="evening",
        top_items=[
            TopItem(title="Rome in Ten Talks", item_type="podcast", completion_rate=0.91, topics=["history"]),
            TopItem(title="Rockets and Orbits", item_type="podcast", completion_rate=0.75, topics=["science"]),
            TopItem(title="The Quiet Detective", item_type="audiobook", completion_rate=0.4, topics=["true crime"]),
            TopItem(title="Empires of the Sea", item_type="audiobook", completion_rate=0.2, topics=["history"]),
        ],
    )
    return UserFacts(**{**base, **changes})


def test_template_fills_the_seven_keys_from_the_facts() -> None:
    profile = template_profile(facts())
    dumped = json.loads(profile.model_dump_json())
    assert set(dumped) == set(PROFILE_KEYS) and all(dumped[key] for key in PROFILE_KEYS)
    assert UserProfile.model_validate(dumped) == profile  # within the LLM schema's caps
    assert profile.listening_habits == "Active on 21 days, about 3.4 plays a day, mostly in the evening."
    assert profile.format_preference == "Mostly podcasts (62% of plays), then audiobooks (38%)."
    assert profile.engagement_depth == 'Finishes about half of what they start (57%); most finished: "Rome in Ten Talks".'
    assert profile.exploration_vs_specialization == "Explores broadly: 3 topics across 4 top items, led by history."
    assert profile.interests[:3] == ["history", "science", "true crime"]
    assert [item.title for item in profile.per_episode_interests] == [
        "Rome in Ten Talks", "Rockets and Orbits", "The Quiet Detective"]
    assert is_usable(dumped)


def test_template_of_a_sparse_user_is_still_complete() -> None:
    long_title = "An Extremely Long Title " * 6
    sparse = facts(type_shares={}, top_topics=[], active_days=0, plays_per_active_day=0.0, peak_time_of_day="none",
                   top_items=[TopItem(title=long_title, item_type="audiobook", completion_rate=0.0)])
    dumped = json.loads(template_profile(sparse).model_dump_json())
    assert all(dumped[key] for key in PROFILE_KEYS)
    assert dumped["interests"] == ["audiobook"] and len(dumped["per_episode_interests"][0]["title"]) <= 60


def test_small_nightly_moves_keep_the_signature_and_the_cache_key() -> None:
    tonight = facts()
    tomorrow = facts(active_days=22, plays_per_active_day=3.6, peak_time_of_day="night",
                     type_shares={"podcast": 0.58, "audiobook": 0.42},
                     top_items=[item.model_copy(update={"completion_rate": item.completion_rate * 0.9})
                                for item in reversed(tonight.top_items[:3])] + tonight.top_items[3:])
    assert profile_signature(tomorrow) == profile_signature(tonight)
    assert profile_request(tomorrow).input_hash == profile_request(tonight).input_hash
    assert profile_request(tomorrow).messages != profile_request(tonight).messages  # asked with tonight's facts


@pytest.mark.parametrize("moved", [
    {"top_topics": ["comedy", "science", "true crime"]},  # a new leading topic
    {"type_shares": {"podcast": 0.3, "audiobook": 0.7}},  # the mix really changed
    {"user_id": "u2"},  # another user never shares a narrative
])
def test_real_moves_change_the_signature(moved: dict[str, object]) -> None:
    assert profile_request(facts(**moved)).input_hash != profile_request(facts()).input_hash


def test_a_title_pasted_into_every_key_is_not_usable() -> None:
    pasted = {"interests": ["history"], "per_episode_interests": [],
              **{key: "Rome in Ten Talks" for key in PROFILE_KEYS[:5]}}
    assert not is_usable(pasted) and not is_usable(None) and not is_usable({"interests": []})


def test_a_narrative_without_episodes_or_with_keys_that_are_no_sentences_is_not_usable() -> None:
    usable = json.loads(template_profile(facts()).model_dump_json())
    assert is_usable(usable)
    assert not is_usable({**usable, "per_episode_interests": []})  # the profile gate asks for all seven keys
    for broken in ("{", ", 1.5, 6.5", "broad, broad"):  # fewer than three words of letters
        assert not is_usable({**usable, "engagement_depth": broken}), broken


def test_raw_genres_in_the_facts_reach_the_profile_as_vocabulary_topics() -> None:
    music = facts(top_topics=["house music", "love songs", "no such genre"],
                  top_items=[TopItem(title="Night Drive", item_type="music", completion_rate=0.8,
                                     topics=["techno", "house music"])])
    profile = template_profile(music)
    assert profile.interests[:4] == ["electronic", "pop", "romance", "no such genre"]
    assert profile.per_episode_interests[0].tags == ["electronic"]
