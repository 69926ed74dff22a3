"""LLM output quality on hand-built answers: topic accuracy, profile faithfulness, JSON validity, and the decision."""
from __future__ import annotations

import datetime as dt
import json

import polars as pl
import pytest

from models import llm_quality
from models.user_profiles import TopItem, UserFacts

ITEM_SCHEMA = {"item_id": pl.String, "status": pl.String, "llm_topics": pl.List(pl.String),
               "floor_topics": pl.List(pl.String), "floor_source": pl.String}


def items(rows: list[tuple[str, str, list[str] | None, list[str], str]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=ITEM_SCHEMA, orient="row")


def test_topic_accuracy_counts_only_answered_unambiguous_items() -> None:
    frame = items([
        ("i1", "ok", ["jazz", "history"], ["jazz"], "taxonomy"),      # contains the floor topic: right
        ("i2", "ok", ["history"], ["history"], "taxonomy"),           # right
        ("i3", "ok", ["true crime"], ["comedy"], "taxonomy"),         # wrong
        ("i4", "ok", ["comedy"], ["science"], "taxonomy"),            # wrong
        ("i5", "ok", ["science"], ["science", "health and fitness"], "taxonomy"),  # two floor topics: ambiguous
        ("i6", "ok", ["comedy"], ["science"], "zero_shot"),           # no genres to be sure of: not measured
        ("i7", "failed", None, ["science"], "taxonomy"),              # no answer to measure
        ("i8", "pending", None, ["jazz"], "taxonomy"),
    ])
    measure = llm_quality.topic_accuracy(frame, floor=0.6, min_answers=4)
    assert (measure.value, measure.count_answers, measure.detail) == (0.5, 4, "2 of 4 unambiguous items")
    assert not measure.passed and measure.reason == "0.500 below the floor 0.6 (2 of 4 unambiguous items)"
    assert llm_quality.topic_accuracy(frame, floor=0.5, min_answers=4).passed


def test_too_few_answers_do_not_pass_even_when_all_are_right() -> None:
    frame = items([(f"i{n}", "ok", ["jazz"], ["jazz"], "taxonomy") for n in range(9)])
    measure = llm_quality.topic_accuracy(frame, floor=0.6)  # MIN_ANSWERS is 10
    assert (measure.value, measure.count_answers, measure.passed) == (1.0, 9, False)
    assert measure.reason.startswith("9 answers measured, fewer than the 10 needed to judge")
    empty = llm_quality.topic_accuracy(items([]), floor=0.6)
    assert (empty.value, empty.count_answers, empty.passed) == (None, 0, False)
    assert empty.reason == "0 answers measured, fewer than the 10 needed to judge"


def facts_json(**changes: object) -> str:
    base = dict(
        user_id="u1", type_shares={"podcast": 0.7, "music": 0.3}, top_topics=["history", "science"], active_days=3,
        plays_per_active_day=2.0, peak_time_of_day="evening",
        top_items=[TopItem(title="Rockets and Orbits", item_type="podcast", completion_rate=0.9, topics=["science"]),
                   TopItem(title="Night Drive", item_type="music", completion_rate=0.5, topics=["techno"])],
    )
    return UserFacts(**{**base, **changes}).model_dump_json()


def test_an_interest_is_found_by_name_by_whole_words_or_through_the_taxonomy() -> None:
    terms = llm_quality.fact_terms(UserFacts.model_validate_json(facts_json()))
    found = {interest: llm_quality.is_found(interest, terms) for interest in [
        "History",             # a top topic, any case
        "science podcasts",    # holds the topic 'science' as whole words
        "Orbits",              # whole words of a top item's title
        "electronic",          # the taxonomy topic of the genre 'techno'
        "podcasts",            # a type, plural
        "astrology",           # nowhere in the facts
        "sci",                 # part of a word is not a match
        "the",                 # a stop word is never enough
        "Rockets & Orbits!",   # punctuation and '&' are normalised away
    ]}
    assert found == {"History": True, "science podcasts": True, "Orbits": True, "electronic": True, "podcasts": True,
                     "astrology": False, "sci": False, "the": False, "Rockets & Orbits!": True}


def test_a_narratives_claims_are_its_distinct_interests_then_episode_titles_and_tags() -> None:
    narrative = {"interests": ["History", "history", "Jazz!", "history"],
                 "per_episode_interests": [{"title": "Night Drive", "tags": ["jazz", "late night"]},
                                           {"title": "night drive", "tags": []}]}
    assert llm_quality.interest_claims(narrative) == ["history", "jazz", "night drive", "late night"]


def test_profile_faithfulness_pools_the_claims_of_valid_narratives() -> None:
    narratives = pl.DataFrame({
        "status": ["ok", "ok", "failed", "pending"],
        "narrative_json": [json.dumps({"interests": ["history", "astrology", "science", "history"]}),
                           json.dumps({"interests": ["Night Drive"],
                                       "per_episode_interests": [{"title": "Night Drive", "tags": ["cooking"]}]}),
                           None, None],
        "facts_json": [facts_json(), facts_json(user_id="u2"), facts_json(user_id="u3"), facts_json(user_id="u4")],
    })
    measure = llm_quality.profile_faithfulness(narratives, floor=0.6, min_answers=2)
    assert (measure.value, measure.count_answers) == (pytest.approx(3 / 5), 2)  # 'history' twice is one claim
    assert measure.detail == "3 of 5 interest claims of 2 narratives found in the facts"
    assert measure.passed  # 0.6 is at the floor
    assert not llm_quality.profile_faithfulness(narratives, floor=0.61, min_answers=2).passed


def test_json_validity_is_the_share_of_stored_answers_that_parsed() -> None:
    statuses = pl.Series(["ok"] * 9 + ["failed"] * 3)
    measure = llm_quality.json_validity(llm_quality.USER_PROFILES, statuses, floor=0.9)
    assert (measure.value, measure.count_answers, measure.passed) == (0.75, 12, False)
    assert measure.detail == "9 of 12 answers valid"
    assert llm_quality.json_validity(llm_quality.USER_PROFILES, statuses, floor=0.75).passed


def test_a_kind_is_used_only_when_every_measure_passes() -> None:
    right = items([(f"i{n}", "ok", ["jazz"], ["jazz"], "taxonomy") for n in range(10)])
    accuracy = llm_quality.topic_accuracy(right, floor=0.6)
    valid = llm_quality.json_validity(llm_quality.ITEM_TOPICS, pl.Series(["ok"] * 10), floor=0.9)
    invalid = llm_quality.json_validity(llm_quality.ITEM_TOPICS, pl.Series(["ok"] * 8 + ["failed"] * 2), floor=0.9)
    assert llm_quality.decision([accuracy, valid]) == (
        True, "LLM output used: topic_accuracy 1.000 at or above the floor 0.6 (10 of 10 unambiguous items); "
              "json_validity 1.000 at or above the floor 0.9 (10 of 10 answers valid)")
    assert llm_quality.decision([accuracy, invalid]) == (
        False, "floor used: json_validity 0.800 below the floor 0.9 (8 of 10 answers valid)")
    assert llm_quality.decision([]) == (False, "not measured")
    now = dt.datetime(2026, 11, 2, 3, 0)
    rows = llm_quality.quality_rows([accuracy, invalid], "m", "item_topics.v1", now)
    assert rows.select("metric", "value", "count_answers", "passed", "is_used").rows() == [
        ("topic_accuracy", 1.0, 10, True, False), ("json_validity", 0.8, 10, False, False)]
    assert rows.schema == pl.Schema(llm_quality.SCHEMA)
    with pytest.raises(ValueError, match="one kind at a time"):
        llm_quality.quality_rows([accuracy, llm_quality.json_validity("user_profiles", pl.Series(["ok"]), 0.9)],
                                 "m", "v", now)
