"""Promotion reads only what a gate published: materialising models/registry alone never skips a gate.

(Serving's counterpart is in test_serving.py, beside its world.)"""
from __future__ import annotations

from pathlib import Path

import dagster as dg

from assets import models
from assets.resources import Crossfade, Warehouse
from tests.conftest import WORLD_AS_OF
from warehouse import registry
from warehouse.store import Store


def register_candidate(store: Store, version: str, stage: str | None) -> None:
    with store.write(stage) as con:
        registry.register(con, {"model_version": version, "model_name": "two_tower_hgnn", "as_of": WORLD_AS_OF,
                                "config": {}, "metrics": {}, "checkpoint_dir": "/nowhere"})


def failure(result: dg.ExecuteInProcessResult) -> str:
    """What the failed step said (a dg.Failure's description, else the error)."""
    data = next(event for event in result.all_events if event.event_type_value == "STEP_FAILURE").event_specific_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def promote(home: Path, store: Store) -> dg.ExecuteInProcessResult:
    return dg.materialize([models.models_registry, models.models_registry_gate], raise_on_error=False, resources={
        "crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(store.database))})


def test_the_registry_promotes_only_a_candidate_its_gate_published(tmp_path: Path) -> None:
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb")
    register_candidate(store, "v1", stage="models.two_tower")  # trained, gate not run
    refused = promote(tmp_path, store)
    assert not refused.success
    assert "passed its promotion gate" in failure(refused)
    with store.audit() as con:
        assert registry.get(con, "v1")["status"] == "candidate"
    store.publish("models.two_tower")  # what the passing gate does
    assert promote(tmp_path, store).success
    with store.read() as con:
        assert registry.promoted(con)["model_version"] == "v1"


def test_a_newer_ungated_candidate_is_neither_promoted_nor_rejected(tmp_path: Path) -> None:
    store = Store(tmp_path / "warehouse" / "crossfade.duckdb")
    register_candidate(store, "v1", stage="models.two_tower")
    store.publish("models.two_tower")
    register_candidate(store, "v2", stage="models.two_tower")  # tonight's, its gate still to run
    assert promote(tmp_path, store).success
    with store.audit() as con:
        assert registry.get(con, "v1")["status"] == "promoted"
        assert registry.get(con, "v2")["status"] == "candidate"
