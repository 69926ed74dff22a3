"""The limits and parameters a suite checks against: the pipeline's settings plus the suites' own constants."""
from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import Any

from warehouse.settings import EVENT_TYPES, Settings


def _setting(name: str) -> Any:
    """The default of a setting: each default is written once, in warehouse/settings.py."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class Thresholds:
    item_types: tuple[str, ...] = _setting("item_types")
    graph_types: tuple[str, ...] = _setting("graph_types")
    target_type: str = _setting("target_type")
    max_reject_rate: float = _setting("max_reject_rate")
    max_quarantined_files: int = _setting("max_quarantined_files")  # per arrival partition
    volume_tolerance: float = _setting("volume_tolerance")
    min_volume_history: int = 3  # earlier partitions needed before volume is judged
    min_co_listeners: int = _setting("min_co_listeners")
    min_catalog_coverage: float = _setting("min_catalog_coverage")
    k: int = _setting("k")
    llm_max_failure_rate: float = _setting("llm_max_failure_rate")
    llm_min_answers_judged: int = 10  # the failure rate is gated once this many LLM answers are stored
    embed_user_budget: int = _setting("embed_user_budget")  # at least this many active users need a vector
    partitions: tuple[dt.date, ...] = ()  # events arrival dates (or candidate as-of dates) to check

    @classmethod
    def from_settings(cls, settings: Settings, partitions: tuple[dt.date, ...] = ()) -> Thresholds:
        """The limits of `settings`, for the given partitions: every field that is also a setting is copied."""
        shared = {field.name: getattr(settings, field.name) for field in dataclasses.fields(cls)
                  if field.name in Settings.model_fields}
        return cls(**shared, partitions=partitions)


__all__ = ["EVENT_TYPES", "Thresholds"]
