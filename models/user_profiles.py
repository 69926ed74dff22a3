"""User profile narratives by LLM: the seven-key JSON of the profile-aware judge, written from listening facts."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from models.enrichment import EnrichRequest

PROMPT_VERSION = "user_profile.v1"
MAX_TOKENS = 320  # five capped sentences, three tagged items, six interests
MAX_ITEMS = 10  # the paper found 20 items beat 5; a 135M model with a 2k context reads about 10 well

Sentence = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=24)]

SYSTEM = "You describe a listener's taste from their listening data. Answer with JSON only."
INSTRUCTION = (
    "Return JSON, one short sentence per text key: listening_habits (what completion says), "
    "engagement_depth (what was finished, what skimmed), format_preference (e.g. interviews, stories, albums), "
    "exploration_vs_specialization (broad or narrow), cross_disciplinary_curiosity (one field or many), "
    "per_episode_interests (up to 3 items: title and tags), interests (up to 6 topics, people or entities)."
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

    listening_habits: Sentence
    engagement_depth: Sentence
    format_preference: Sentence
    exploration_vs_specialization: Sentence
    cross_disciplinary_curiosity: Sentence
    per_episode_interests: list[ItemInterest] = Field(max_length=3)
    interests: list[Tag] = Field(min_length=1, max_length=6)


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
    """One narrative request per user; identical facts give an identical request, hence a cache hit."""
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
    )
