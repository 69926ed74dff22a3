"""Partitions: events by arrival day, from the `partitions_start` setting.

The one place settings are read when definitions load: Dagster fixes a partitions definition when the
code location loads, so the first day offered in the UI cannot wait for a run.
"""
from __future__ import annotations

import dagster as dg

from warehouse.settings import load_settings

events_partitions = dg.DailyPartitionsDefinition(start_date=load_settings().partitions_start.isoformat(),
                                                 timezone="UTC")
