"""The limits and parameters a suite checks against; filled by the pipeline from settings."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

EVENT_TYPES = ("play", "skip", "save", "follow", "purchase", "preview")


@dataclass(frozen=True)
class Thresholds:
    item_types: tuple[str, ...] = ("music", "podcast", "audiobook")
    graph_types: tuple[str, ...] = ("podcast", "audiobook")
    target_type: str = "audiobook"
    max_reject_rate: float = 0.05
    volume_tolerance: float = 0.5
    min_volume_history: int = 3  # earlier partitions needed before volume is judged
    min_co_listeners: int = 1
    min_catalog_coverage: float = 0.05
    k: int = 100
    llm_max_failure_rate: float = 0.2
    llm_min_answers_judged: int = 10  # the failure rate is gated once this many LLM answers are stored
    embed_user_budget: int = 20_000  # user texts encoded per run: at least this many active users need a vector
    partitions: tuple[dt.date, ...] = ()  # events arrival dates (or candidate as-of dates) to check
