"""User profile narratives by LLM: the seven-key JSON of the profile-aware judge, written from listening facts."""
from __future__ import annotations

import json
import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from models.enrichment import EnrichRequest

PROMPT_VERSION = "user_profile.v2"  # v2: keyed by profile_signature, interests first
MAX_TOKENS = 320  # five capped sentences, three tagged items, six interests
MAX_ITEMS = 10  # the paper found 20 items beat 5; a 135M model with a 2k context reads about 10 well
# The coarse signature a narrative is cached on: it moves when taste moves, not with tonight's counts.
SIGNATURE_TOPICS = 3
SIGNATURE_ITEMS = 3
SHARE_STEP = 0.25  # type shares rounded to quarters: 60% vs 64% podcasts is the same listener
MIN_DISTINCT_SENTENCES = 4  # of the five sentence keys; fewer is one text pasted into every key
MIN_SENTENCE_WORDS = 3  # words of letters in each sentence key: "{", ", 1.5, 6.5" or "broad" say nothing

Sentence = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=24)]

SYSTEM = "You describe a listener's taste from their listening data. Answer with JSON only."
INSTRUCTION = (
    "Return JSON: interests (up to 6 topics, people or entities), per_episode_interests (up to 3 items: title "
    "and tags), then one short sentence per text key: listening_habits (what completion says), "
    "engagement_depth (what was finished, what skimmed), format_preference (e.g. interviews, stories, albums), "
    "exploration_vs_specialization (broad or narrow), cross_disciplinary_curiosity (one field or many)."
)


class TopItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
    item_type: str
    completion_rate: float = Field(ge=0.0, le=1.0)
    topics: list[str] = []


class UserFacts(BaseModel):
    """What SQL knows about a user over the window; the prompt is rendered from this alone."""

    model_config = ConfigDict(extra="forbid")

    user_id: str
    type_shares: dict[str, float]  # share of plays per item type
    top_topics: list[str] = []
    active_days: int = Field(ge=0)
    plays_per_active_day: float = Field(ge=0.0)
    peak_time_of_day: str  # night | morning | afternoon | evening
    top_items: list[TopItem]  # most engaged first


class ItemInterest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
    tags: list[Tag] = Field(max_length=3)


class UserProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The judge paper's seven keys; a grammar-constrained model writes them in this order, so the interests
    # (what downstream reads first) come before the sentences that explain them.
    interests: list[Tag] = Field(min_length=1, max_length=6)
    per_episode_interests: list[ItemInterest] = Field(max_length=3)
    listening_habits: Sentence
    engagement_depth: Sentence
    format_preference: Sentence
    exploration_vs_specialization: Sentence
    cross_disciplinary_curiosity: Sentence


SENTENCE_KEYS = ("listening_habits", "engagement_depth", "format_preference", "exploration_vs_specialization",
                 "cross_disciplinary_curiosity")
PROFILE_KEYS = ("listening_habits", "engagement_depth", "format_preference", "exploration_vs_specialization",
                "cross_disciplinary_curiosity", "per_episode_interests", "interests")  # the paper's order


def profile_signature(facts: UserFacts) -> str:
    """The user's coarse taste: top topics, top items (as sets) and type shares rounded to SHARE_STEP."""
    shares = {kind: round(round(share / SHARE_STEP) * SHARE_STEP, 2) for kind, share in facts.type_shares.items()}
    return json.dumps({
        "user_id": facts.user_id,
        "top_topics": sorted(facts.top_topics[:SIGNATURE_TOPICS]),
        "top_items": sorted(f"{item.item_type}:{item.title}" for item in facts.top_items[:SIGNATURE_ITEMS]),
        "type_shares": {kind: share for kind, share in sorted(shares.items()) if share > 0},
    }, ensure_ascii=False, sort_keys=True)


def is_usable(output: dict[str, Any] | None) -> bool:
    """A narrative worth reading: valid against UserProfile, all seven keys filled (at least one per-episode
    interest, as the profile gate asks of what downstream reads), each sentence key a sentence of at least
    MIN_SENTENCE_WORDS words, and not one text pasted into every sentence key."""
    if not output:
        return False
    try:
        profile = UserProfile.model_validate(output)
    except ValueError:
        return False
    texts = [getattr(profile, key) for key in SENTENCE_KEYS]
    if not profile.per_episode_interests or any(len(re.findall(r"[^\W\d_]{2,}", text)) < MIN_SENTENCE_WORDS
                                                for text in texts):
        return False
    sentences = {" ".join(text.lower().split()).strip(" .") for text in texts}
    return len(sentences) >= MIN_DISTINCT_SENTENCES


def profile_prompt(facts: UserFacts, max_items: int = MAX_ITEMS) -> str:
    shares = ", ".join(f"{kind} {share:.0%}" for kind, share in sorted(facts.type_shares.items(), key=lambda kv: -kv[1]))
    lines = [
        "Listening over the last 90 days.",
        f"Plays by type: {shares or 'none'}.",
        f"Active {facts.active_days} days, {facts.plays_per_active_day:.1f} plays a day, mostly {facts.peak_time_of_day}.",
    ]
    if facts.top_topics:
        lines.append("Top topics: " + ", ".join(facts.top_topics) + ".")
    lines.append("Top items (type, share finished, topics):")
    for item in facts.top_items[:max_items]:
        topics = ", ".join(item.topics) or "-"
        lines.append(f'- "{item.title}" ({item.item_type}, {item.completion_rate:.0%}, {topics})')
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def profile_request(
    facts: UserFacts, *, max_items: int = MAX_ITEMS, max_tokens: int = MAX_TOKENS
) -> EnrichRequest:
    """One narrative request per user, cached on profile_signature: a user whose counts move but whose taste does
    not keeps the narrative already paid for; the prompt is rendered from the facts of the night it is asked."""
    if not facts.top_items:
        raise ValueError(f"user {facts.user_id} has no top items; profile only users with listening in the window")
    return EnrichRequest(
        entity_id=facts.user_id,
        prompt_version=PROMPT_VERSION,
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": profile_prompt(facts, max_items)},
        ],
        output_type=UserProfile,
        max_tokens=max_tokens,
        signature=profile_signature(facts),
    )
