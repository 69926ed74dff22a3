"""Nightly quality of the LLM's output per kind (item topics, user profiles), and whether downstream may use it.

Three measures, each over the answers of the current model and prompt version:

- topic_accuracy (item topics): on *unambiguous* items, the share whose LLM topics contain the floor's topic.
  An item is unambiguous when its floor came from the taxonomy (floor_source 'taxonomy', so from its genres,
  not from zero-shot) and its genres map to exactly one topic (one floor topic). "Contain", not "first equals":
  the schema asks for one to three topics in no particular order, and the floor's topic is a broad shelf that
  an item may rightly share with another. Counted: unambiguous items with a valid ('ok') answer.
- profile_faithfulness (user profiles): of the interest claims of the valid narratives, pooled, the share found
  in their user's facts (see `fact_terms` and `is_found`). A narrative's claims are its distinct `interests` and
  the titles and tags of its `per_episode_interests`, normalised, each counted once (an interest repeated six
  times is one claim). Counted: valid narratives.
- json_validity (both kinds): of the answers in enrich.llm_cache, the share that parsed against the schema
  (status 'ok' against 'failed'). Counted: stored answers.

A measure passes when at least `min_answers` answers were measured and its value is at or above its floor;
with fewer answers there is no rate yet, and it does not pass. A kind is used downstream only when every one
of its measures passes; otherwise the floor's value (taxonomy or zero-shot topics, the template profile) is.
"""
from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from models.topic_taxonomy import genre_topics, normalise_genre
from models.user_profiles import UserFacts

MIN_ANSWERS = 10  # below this a share is one or two answers' luck: the kind is not judged, and not used
ITEM_TOPICS, USER_PROFILES = "item_topics", "user_profiles"  # the kinds, named for the tables they feed
TOPIC_ACCURACY, PROFILE_FAITHFULNESS, JSON_VALIDITY = "topic_accuracy", "profile_faithfulness", "json_validity"
METRICS = {ITEM_TOPICS: (TOPIC_ACCURACY, JSON_VALIDITY), USER_PROFILES: (PROFILE_FAITHFULNESS, JSON_VALIDITY)}
# Words that never make an interest "found" on their own when only part of a fact (or the reverse) is matched.
STOP_WORDS = frozenset({"a", "an", "and", "the", "of", "in", "on", "for", "with", "to", "from", "by", "at", "my"})
SCHEMA = {
    "kind": pl.String, "metric": pl.String, "value": pl.Float64, "count_answers": pl.Int64, "min_answers": pl.Int64,
    "floor": pl.Float64, "passed": pl.Boolean, "is_used": pl.Boolean, "reason": pl.String, "model": pl.String,
    "prompt_version": pl.String, "measured_at": pl.Datetime("us"),
}


@dataclass(frozen=True)
class Measure:
    kind: str
    metric: str
    value: float | None  # None: nothing to measure
    count_answers: int  # answers the value is measured on
    floor: float
    min_answers: int
    detail: str  # what the value is a share of, e.g. "9 of 12 unambiguous items"

    @property
    def passed(self) -> bool:
        return self.value is not None and self.count_answers >= self.min_answers and self.value >= self.floor

    @property
    def reason(self) -> str:
        if self.count_answers < self.min_answers:
            return (f"{self.count_answers} answers measured, fewer than the {self.min_answers} needed to judge"
                    + (f" ({self.detail})" if self.value is not None else ""))
        verdict = "at or above" if self.passed else "below"
        return f"{self.value:.3f} {verdict} the floor {self.floor:g} ({self.detail})"


def _share(kind: str, metric: str, hits: int, total: int, count_answers: int, floor: float, min_answers: int,
           detail: str) -> Measure:
    return Measure(kind, metric, hits / total if total else None, count_answers, floor, min_answers, detail)


def topic_accuracy(items: pl.DataFrame, floor: float, min_answers: int = MIN_ANSWERS) -> Measure:
    """Of unambiguous items (floor_source 'taxonomy', exactly one floor topic) with status 'ok', the share whose
    llm_topics contain the floor topic. `items`: status, llm_topics, floor_topics, floor_source."""
    measured = items.filter(
        (pl.col("status") == "ok") & (pl.col("floor_source") == "taxonomy") & (pl.col("floor_topics").list.len() == 1)
    )
    hits = int(measured.select(
        pl.col("llm_topics").fill_null([]).list.contains(pl.col("floor_topics").list.first()).sum()).item() or 0)
    return _share(ITEM_TOPICS, TOPIC_ACCURACY, hits, measured.height, measured.height, floor, min_answers,
                  f"{hits} of {measured.height} unambiguous items")


def _words(text: str) -> str:
    return normalise_genre(text)  # lower case, '&' as 'and', punctuation as spaces


def fact_terms(facts: UserFacts) -> set[str]:
    """What a faithful interest may name, normalised: the top topics; each top item's title, type (singular and
    plural) and topics; and the taxonomy topics those topics (raw genres for music) map to."""
    terms = list(facts.top_topics) + list(facts.type_shares)
    for item in facts.top_items:
        terms += [item.title, item.item_type, *item.topics]
    terms += [topic for term in list(terms) for topic in genre_topics(term)]
    terms += [term + "s" for term in terms if not term.endswith("s")]  # 'podcast' -> 'podcasts'
    return {words for words in map(_words, terms) if words}


def is_found(interest: str, terms: Iterable[str]) -> bool:
    """An interest is found in the facts when, normalised, it equals a term, or a term occurs in it as whole words
    ('jazz music' holds 'jazz'), or it occurs in a term as whole words ('orbits' in 'rockets and orbits'); a part
    matched on its own must not be a stop word."""
    key = _words(interest)
    if not key or key in STOP_WORDS:
        return False
    padded = f" {key} "
    return any(key == term or (term not in STOP_WORDS and f" {term} " in padded) or padded in f" {term} "
               for term in terms)


def interest_claims(narrative: dict[str, Any]) -> list[str]:
    """A narrative's distinct interest claims, normalised: its interests, then its per-episode titles and tags."""
    claims = [str(value) for value in narrative.get("interests") or []]
    for episode in narrative.get("per_episode_interests") or []:
        claims += [str(episode.get("title") or ""), *(str(tag) for tag in episode.get("tags") or [])]
    return [claim for claim in dict.fromkeys(map(_words, claims)) if claim]


def profile_faithfulness(narratives: pl.DataFrame, floor: float, min_answers: int = MIN_ANSWERS) -> Measure:
    """Of the interest claims of valid narratives (status 'ok'), pooled, the share found in their user's facts.
    `narratives`: status, narrative_json (the answer), facts_json (UserFacts)."""
    valid = narratives.filter((pl.col("status") == "ok") & pl.col("narrative_json").is_not_null())
    found = total = 0
    for narrative_json, facts_json in valid.select("narrative_json", "facts_json").iter_rows():
        terms = fact_terms(UserFacts.model_validate_json(facts_json))
        claims = interest_claims(json.loads(narrative_json))
        found += sum(is_found(claim, terms) for claim in claims)
        total += len(claims)
    return _share(USER_PROFILES, PROFILE_FAITHFULNESS, found, total, valid.height, floor, min_answers,
                  f"{found} of {total} interest claims of {valid.height} narratives found in the facts")


def json_validity(kind: str, statuses: pl.Series, floor: float, min_answers: int = MIN_ANSWERS) -> Measure:
    """Of stored answers ('ok' or 'failed', one per input), the share that parsed against the schema."""
    answered = int(statuses.is_in(["ok", "failed"]).sum())
    valid = int((statuses == "ok").sum())
    return _share(kind, JSON_VALIDITY, valid, answered, answered, floor, min_answers,
                  f"{valid} of {answered} answers valid")


def decision(measures: Sequence[Measure]) -> tuple[bool, str]:
    """Whether the kind's output is used downstream (every measure passed), and why, in one line."""
    if not measures:
        return False, "not measured"
    failed = [measure for measure in measures if not measure.passed]
    if not failed:
        return True, "LLM output used: " + "; ".join(f"{m.metric} {m.reason}" for m in measures)
    return False, "floor used: " + "; ".join(f"{m.metric} {m.reason}" for m in failed)


def quality_rows(measures: Sequence[Measure], model: str, prompt_version: str, now: dt.datetime) -> pl.DataFrame:
    """enrich.llm_quality rows of one kind: one per measure, each carrying the kind's decision (`is_used`)."""
    kinds = {measure.kind for measure in measures}
    if len(kinds) != 1:
        raise ValueError(f"quality rows are written one kind at a time (got kinds {sorted(kinds)})")
    is_used, _ = decision(measures)
    return pl.DataFrame([{
        "kind": m.kind, "metric": m.metric, "value": m.value, "count_answers": m.count_answers,
        "min_answers": m.min_answers, "floor": m.floor, "passed": m.passed, "is_used": is_used, "reason": m.reason,
        "model": model, "prompt_version": prompt_version, "measured_at": now,
    } for m in measures], schema=SCHEMA)
