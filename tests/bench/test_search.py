"""bench/search.py: the search reads validation only; scrambling the holdout changes no trial and no choice."""
from __future__ import annotations

from dataclasses import replace

import optuna
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from bench import search
from models.evaluate import EvaluateConfig
from models.two_tower import TwoTowerConfig
from tests.conftest import EVAL_TYPES, TYPES
from tests.models.test_protocol import frames_of, world

# a small tower: the protocol, not the model, is under test; the trials still draw their own epochs
CONFIG = EvaluateConfig(**EVAL_TYPES, models=search.BASELINES,
                        two_tower=TwoTowerConfig(**TYPES, hidden=(32, 16), epochs=10, max_users_per_epoch=0))


def run(scramble_holdout: bool) -> search.Search:
    frames = frames_of(world(scramble_holdout=scramble_holdout))
    text = pl.DataFrame({"item_id": frames.items["item_id"],
                         "embedding": [[float(i % 3 == c) for c in range(3)] for i in range(frames.items.height)]})
    return search.search(frames, text, text, None, CONFIG, trials=2, seed=0)


@pytest.fixture(scope="module")
def found() -> search.Search:
    return run(scramble_holdout=False)


def test_scrambled_holdout_changes_no_trial_and_no_choice(found: search.Search) -> None:
    scrambled = run(scramble_holdout=True)
    assert_frame_equal(scrambled.trials.drop("seconds"), found.trials.drop("seconds"))
    assert (scrambled.best_trial, scrambled.best) == (found.best_trial, found.best)


def test_trial_zero_is_the_default_config(found: search.Search) -> None:
    first = found.trials.row(0, named=True)
    assert first["trial"] == 0 and first["state"] == "COMPLETE"
    assert {name: first[name] for name in search.params_of(CONFIG.two_tower)} == search.params_of(CONFIG.two_tower)
    assert found.objective_slice == "cold"
    assert found.trials["valid cold"].is_not_null().all()


def test_space_holds_the_default_off_its_grid() -> None:
    default = replace(CONFIG.two_tower, epochs=7, hidden=(64, 8), lr=0.1)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0))
    study.enqueue_trial(search.params_of(default))
    drawn = search.suggest(study.ask(), default)
    assert drawn == default
