"""Floor user profiles without an LLM: the judge paper's seven keys written from the SQL facts by a template."""
from __future__ import annotations

from collections.abc import Sequence
from statistics import median
from typing import Any

from models.enrichment import BatchResult, EnrichRequest
from models.topic_taxonomy import TOPICS, genre_topics
from models.user_profiles import ItemInterest, TopItem, UserFacts, UserProfile, is_usable

SENTENCE_CHARS = 100  # UserProfile's cap on each sentence
TITLE_CHARS = 60
TAG_CHARS = 24
FINISHER = 0.7  # median completion of the top items at or above it: finishes what they start
SAMPLER = 0.3  # at or below it: samples more than finishes
SPECIALIST_SHARE = 0.6  # share of top items carrying the leading topic that makes a listener specialised
MIN_FORMAT_SHARE = 0.1  # a type with at least this share of plays counts as a format the user listens to


def _fit(text: str, limit: int) -> str:
    """`text` cut at a word to at most `limit` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    return text[: limit - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."


def _plural(kind: str) -> str:
    return kind if kind.endswith("s") or kind == "music" else kind + "s"


def _listening_habits(facts: UserFacts) -> str:
    if not facts.active_days:
        return "No plays in the window yet; only previews, saves or follows."
    return (f"Active on {facts.active_days} days, about {facts.plays_per_active_day:.1f} plays a day, "
            f"mostly in the {facts.peak_time_of_day}.")


def _engagement_depth(items: list[TopItem]) -> str:
    if not items:
        return "Nothing played long enough to judge depth yet."
    typical = median(item.completion_rate for item in items)
    best = max(items, key=lambda item: item.completion_rate)
    if typical >= FINISHER:
        lead = f"Finishes what they start (typically {typical:.0%})"
    elif typical <= SAMPLER:
        lead = f"Samples more than finishes (typically {typical:.0%})"
    else:
        lead = f"Finishes about half of what they start ({typical:.0%})"
    return _fit(f'{lead}; most finished: "{best.title}".', SENTENCE_CHARS)


def _format_preference(facts: UserFacts) -> str:
    shares = sorted(facts.type_shares.items(), key=lambda kv: (-kv[1], kv[0]))
    if not shares:
        kinds = sorted({item.item_type for item in facts.top_items})
        return _fit("Engages with " + (", ".join(_plural(k) for k in kinds) or "the catalogue") + " without plays.",
                    SENTENCE_CHARS)
    (kind, share), rest = shares[0], [(k, v) for k, v in shares[1:] if v >= MIN_FORMAT_SHARE]
    text = f"Mostly {_plural(kind)} ({share:.0%} of plays)"
    if rest:
        text += ", then " + ", ".join(f"{_plural(k)} ({v:.0%})" for k, v in rest)
    return _fit(text + ".", SENTENCE_CHARS)


def _in_vocabulary(topics: Sequence[str]) -> list[str]:
    """Topics of the shared vocabulary: items outside enrich.item_topics' types (music by default) carry raw
    genres in the facts, mapped here through the taxonomy; a genre that maps to nothing is kept as it is."""
    mapped: list[str] = []
    for topic in topics:
        mapped.extend([topic] if topic in TOPICS else list(genre_topics(topic)) or [topic])
    return list(dict.fromkeys(mapped))


def _topic_counts(items: list[TopItem]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        for topic in _in_vocabulary(item.topics):
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def _exploration(facts: UserFacts, counts: dict[str, int]) -> str:
    items = len(facts.top_items)
    if not counts:
        return _fit(f"Too few labelled items to tell breadth ({items} top items).", SENTENCE_CHARS)
    lead, lead_count = max(counts.items(), key=lambda kv: (kv[1], -list(counts).index(kv[0])))
    if items and lead_count / items >= SPECIALIST_SHARE:
        return _fit(f"Specialised: {lead_count} of {items} top items are {lead}.", SENTENCE_CHARS)
    return _fit(f"Explores broadly: {len(counts)} topics across {items} top items, led by {lead}.", SENTENCE_CHARS)


def _curiosity(facts: UserFacts, counts: dict[str, int]) -> str:
    formats = [kind for kind, share in facts.type_shares.items() if share >= MIN_FORMAT_SHARE]
    if len(counts) <= 1 and len(formats) <= 1:
        return "Stays within one field and one format."
    named = ", ".join(sorted(counts, key=lambda topic: (-counts[topic], topic))[:3])
    return _fit(f"Crosses {len(counts)} topics ({named}) in {max(len(formats), 1)} formats.", SENTENCE_CHARS)


def _interests(facts: UserFacts, counts: dict[str, int]) -> list[str]:
    ranked = _in_vocabulary(facts.top_topics) + sorted(counts, key=lambda topic: (-counts[topic], topic))
    ranked += [_plural(kind) for kind, _ in sorted(facts.type_shares.items(), key=lambda kv: (-kv[1], kv[0]))]
    ranked += [item.item_type for item in facts.top_items]
    tags = [_fit(tag, TAG_CHARS) for tag in dict.fromkeys(tag for tag in ranked if tag.strip())]
    return tags[:6] or ["listening"]


def template_profile(facts: UserFacts) -> UserProfile:
    """The seven keys from the facts alone: the same facts give the same profile, and every key is non-empty."""
    items = list(facts.top_items)
    counts = _topic_counts(items)
    return UserProfile(
        interests=_interests(facts, counts),
        per_episode_interests=[
            ItemInterest(title=_fit(item.title, TITLE_CHARS) or item.item_type,
                         tags=[_fit(topic, TAG_CHARS) for topic in _in_vocabulary(item.topics or [item.item_type])][:3])
            for item in items[:3]
        ],
        listening_habits=_listening_habits(facts),
        engagement_depth=_engagement_depth(items),
        format_preference=_format_preference(facts),
        exploration_vs_specialization=_exploration(facts, counts),
        cross_disciplinary_curiosity=_curiosity(facts, counts),
    )


def profile_columns(facts: Sequence[UserFacts], requests: Sequence[EnrichRequest], batch: BatchResult
                    ) -> dict[str, list[Any]]:
    """Per user (in `facts` order, one request each): input_hash and signature of the narrative request, the
    template profile as JSON, and whether the narrative the batch holds for it is usable (see is_usable)."""
    if len(facts) != len(requests):
        raise ValueError(f"{len(facts)} users for {len(requests)} requests; build one request per user")
    usable = {result.entity_id: is_usable(result.output) for result in batch.results if result.status == "ok"}
    return {
        "input_hash": [request.input_hash for request in requests],
        "signature": [request.signature for request in requests],
        "template_json": [template_profile(user).model_dump_json() for user in facts],
        "is_narrative_usable": [usable.get(user.user_id, False) for user in facts],
    }
