"""Enrichment assets on a hand-made world with the bundled LLM: facts, budget carry-over, no calls on a re-run, gates."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest

from assets import enrich, features, raw
from models.llm import OpenAICompatible
from pipelines.llm import LLMBackend
from pipelines.resources import AS_OF_TAG, Crossfade, Warehouse
from quality import Thresholds, enrich_suites
from warehouse import enrichment_tables
from warehouse.store import Store

PARTITION = "2026-11-01"  # every event arrives in this one landing partition
AS_OF = "2026-11-02"  # train period ends at 2026-10-19: every event below is in it
BUDGET = 2
ITEMS = [
    ("m1", "music", "Night Drive", "Synth music for late roads.", ["electronic"]),
    ("m2", "music", "Blue Piano", "Slow jazz trio sessions.", ["jazz"]),
    ("p1", "podcast", "Rockets and Orbits", "Engineers explain how rockets reach orbit.", ["science"]),
    ("a1", "audiobook", "Rome in Ten Talks", "The rise and fall of the Roman republic.", ["history"]),
    ("a2", "audiobook", "The Quiet Detective", "A detective novel set in a small harbour town.", ["crime"]),
]
# (user, item, UTC timestamp, event type, ms played); u4 never listens.
EVENTS = (
    [("u1", "m1", f"2026-10-0{day}T19:00:00Z", "play", 200_000) for day in range(1, 6)]
    + [("u1", "m2", f"2026-10-0{day}T20:00:00Z", "play", 600_000) for day in range(6, 9)]
    + [("u2", "m2", f"2026-10-0{day}T07:00:00Z", "play", 300_000) for day in range(1, 6)]
    + [("u2", "p1", "2026-10-06T07:30:00Z", "play", 60_000)]
    + [
        ("u3", "p1", "2026-10-01T08:00:00Z", "play", 600_000),
        ("u3", "p1", "2026-10-02T09:00:00Z", "play", 300_000),
        ("u3", "a1", "2026-10-03T20:00:00Z", "play", 150_000),
        ("u3", "a2", "2026-10-03T21:00:00Z", "preview", 0),
    ]
)
USERS = ("u1", "u2", "u3", "u4")
CROSSFADE_VARIABLES = {"CROSSFADE_LLM_CALL_BUDGET": str(BUDGET)}


def write_landing(landing: Path) -> None:
    def jsonl(relative: str, rows: list[dict[str, Any]]) -> None:
        path = landing / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))

    jsonl("items/items.jsonl", [
        {"item_id": item_id, "item_type": item_type, "title": title, "description": description, "creator": "Studio",
         "language": "en", "genres": genres, "duration_ms": 600_000, "release_date": "2020-01-01", "is_paid": False}
        for item_id, item_type, title, description, genres in ITEMS
    ])
    jsonl("users/users.jsonl", [
        {"user_id": user_id, "country": "SE", "age_bucket": "25-34", "signup_date": "2024-01-01", "plan": "premium"}
        for user_id in USERS
    ])
    jsonl(f"events/date={PARTITION}/part-0.jsonl", [
        {"event_id": f"e{n}", "user_id": user, "item_id": item, "ts": ts, "event_type": kind, "ms_played": ms,
         "context": "home", "country": "SE"}
        for n, (user, item, ts, kind, ms) in enumerate(EVENTS)
    ])


@contextlib_free := None  # placeholder removed below
