"""Item topics by LLM: up to three topics from a fixed vocabulary, free tags, a one-line summary, the language."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from models.enrichment import EnrichRequest
from models.topic_taxonomy import TOPICS

PROMPT_VERSION = "item_topics.v1"  # the key also hashes prompt and schema: their change is a new answer anyway
MAX_TOKENS = 96  # the schema caps the answer near 70 tokens; more only feeds a runaway string
DESCRIPTION_CHARS = 240  # a small model reads the opening best, and prompt tokens cost time

# The floor's vocabulary (models/topic_taxonomy.py), so LLM answers and floor topics can be compared.
Topic = Literal[TOPICS]  # type: ignore[valid-type]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=24)]

SYSTEM = "You label items of an audio catalogue. Answer with JSON only."
# The vocabulary reaches the model through the schema, not the prompt: SmolLM2 given the list copied its first
# entries (true crime -> "pop"), left free it matched the item's genre more often, at half the prompt tokens.
INSTRUCTION = (
    "Return JSON: topics (1 to 3 broad topics), tags (up to 4 short keywords), "
    "language (ISO 639-1 code, e.g. en), summary (one short line)."
)


class ItemTopics(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Field order is the order a grammar-constrained model writes them: the decision first, so an answer cut
    # at max_tokens has already said its topics.
    topics: list[Topic] = Field(min_length=1, max_length=3)  # type: ignore[valid-type]
    tags: list[Tag] = Field(max_length=4)
    language: str = Field(pattern=r"^[a-z][a-z]$")
    summary: str = Field(min_length=1, max_length=120)

    @field_validator("topics", "tags")
    @classmethod
    def _distinct(cls, values: list[str]) -> list[str]:
        return list(dict.fromkeys(values))  # small models repeat themselves; order kept


def item_prompt(item: dict[str, Any]) -> str:
    """The user message for one raw.items row (item_type, title, creator, genres, description)."""
    description = " ".join(str(item.get("description") or "").split())
    if len(description) > DESCRIPTION_CHARS:
        description = description[:DESCRIPTION_CHARS].rsplit(" ", 1)[0] + "..."
    lines = [f'Item: {item.get("item_type") or "item"} "{item.get("title") or "untitled"}"']
    if item.get("creator"):
        lines[0] += f' by {item["creator"]}'
    if item.get("genres"):
        lines.append("Genres: " + ", ".join(item["genres"]))
    if description:
        lines.append("Description: " + description)
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def item_request(item: dict[str, Any], *, max_tokens: int = MAX_TOKENS) -> EnrichRequest:
    """One enrichment request for a raw.items row given as a dict (polars `rows(named=True)`)."""
    if not item.get("item_id"):
        raise ValueError(f"item needs an item_id (got {sorted(item)})")
    return EnrichRequest(
        entity_id=str(item["item_id"]),
        prompt_version=PROMPT_VERSION,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": item_prompt(item)}],
        output_type=ItemTopics,
        max_tokens=max_tokens,
    )
