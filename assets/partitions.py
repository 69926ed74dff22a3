"""Partitions: events by arrival day, candidates by as-of day; the first day comes from settings."""
from __future__ import annotations

import dagster as dg

from warehouse.settings import load_settings

_start = load_settings().partitions_start.isoformat()

events_partitions = dg.DailyPartitionsDefinition(start_date=_start, timezone="UTC")
candidates_partitions = dg.DailyPartitionsDefinition(start_date=_start, timezone="UTC", end_offset=1)
