"""Jobs: ingestion of arrival partitions, and the nightly chain from raw files to published candidates."""
from __future__ import annotations

import dagster as dg

from assets.partitions import events_partitions

RAW = dg.AssetSelection.groups("raw")

ingest_job = dg.define_asset_job(
    "ingest",
    selection=RAW,
    partitions_def=events_partitions,
    description="Landing files into raw.items, raw.users and the selected raw.events arrival partitions.",
)

nightly_job = dg.define_asset_job(
    "nightly",
    selection=dg.AssetSelection.all(),
    partitions_def=events_partitions,
    description=(
        "Partition K: ingest arrival day K, then refresh features, enrichment, models and candidates "
        "with every event before K + 1 (the as-of date)."
    ),
)

refresh_job = dg.define_asset_job(
    "refresh",
    selection=dg.AssetSelection.all() - dg.AssetSelection.keys(["raw", "events"]),
    partitions_def=events_partitions,
    description="Everything downstream of raw.events for partition K (as-of K + 1), without re-ingesting events.",
)
