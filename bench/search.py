"""Benchmark: a seeded Optuna (TPE) search over 2T-HGNN's main two-tower settings on validation, then one holdout score.

Reads a CROSSFADE_HOME whose warehouse holds a finished nightly run (features, enrich.text_embeddings,
models.hgnn_item_embeddings, models.registry) through its published snapshot, read-only, and follows the
pipeline's protocol (README, "Evaluation protocol"):

1. Validation chooses. The holdout rows are dropped before anything else (models.protocol.without_holdout).
   Each trial fits 2T-HGNN on 'train' with the trial's settings and scores it on 'valid'; the objective is
   HR@10 on the cold slice (users with no target-type item before the validation period, where 2T-HGNN must
   beat EASE and item-KNN; all users when no cold user has a validation target). Trial 0 is the nightly
   run's own two-tower config (the newest registry row's), so the default's figures sit in the same table.
   The baselines (Popularity, item-KNN, EASE and ALS over their grids, LLM-KNN) are validated in the same
   run by models.protocol.validate.
2. Holdout, once. The best trial's config and the default are refitted on train + valid, as is every
   baseline with its validated setting, and scored on the holdout: cold and warm HR@10 ± one standard
   error. Nothing reads these figures to choose.

The space (FLOATS and CHOICES below) is TwoTowerConfig's main knobs; each range also holds the nightly
value. The HGNN item vectors are the warehouse's (trained on the train period's graph), as in the nightly
run. `--seed` seeds the TPE sampler; the models keep the nightly config's seed, so trial 0 reproduces the
nightly validation figure.

Run from the repository root (half a minute to six minutes a trial on the 2,000-user demo world on a busy 2-core host):
    python bench/search.py --home /path/to/crossfade_home --trials 20 --seed 0 [--timeout-s 2400]
RESULT: the best config's holdout cold HR@10 against the best baseline's holdout cold HR@10.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import optuna  # noqa: E402
import polars as pl  # noqa: E402

from models import protocol  # noqa: E402
from models.evaluate import (HOLDOUT, PRODUCTION_MODEL, VALIDATION, EvaluateConfig, EvaluationSet,  # noqa: E402
                             Phase, evaluation_set, model_builders, score)
from models.recommender import FeatureFrames  # noqa: E402
from models.text_features import text_or_hashed  # noqa: E402
from models.torch_threads import torch_threads  # noqa: E402
from models.two_tower import TwoTowerConfig  # noqa: E402
from warehouse import readers, registry  # noqa: E402
from warehouse.settings import load_settings  # noqa: E402
from warehouse.store import Store, table_exists  # noqa: E402

BASELINES = ("popularity", "item_knn", "ease", "als", "llm_knn")  # the servable baselines, tuned as nightly
METRIC = "hr@10"
# Searched TwoTowerConfig knobs. Floats: name -> (low, high, log scale).
FLOATS: dict[str, tuple[float, float, bool]] = {
    "target_label_weight": (0.1, 0.9, False),  # share of the loss on target-type labels (podcasts carry the rest)
    "label_fraction": (0.2, 0.8, False),  # share of a warm user's items hidden as labels in an example
    "cold_example_rate": (0.0, 0.8, False),  # share of warm users shown as cold (every target item hidden)
    "lr": (3e-4, 3e-3, True),
    "temperature": (0.02, 0.2, True),  # sharpening of unit-vector cosines before the in-batch softmax
}
# Choices: name -> values; tower widths are written 'a-b-c' (the last is the output dimension).
CHOICES: dict[str, tuple[Any, ...]] = {
    "history_bag_dim": (0, 16, 32, 64),  # learned embeddings of each user's most-played items (0 = off)
    "hidden": ("256-128", "512-256-128", "1024-512-128"),
    "epochs": (10, 20, 30),
    "use_popularity": (True, False),  # the item tower reads the item's reach
}


class Figures(NamedTuple):
    """HR@10 and its standard error per slice of one model on one evaluation set."""

    cold: tuple[float | None, float | None]
    warm: tuple[float | None, float | None]

    @staticmethod
    def of(metrics: pl.DataFrame, model: str) -> Figures:
        rows = metrics.filter((pl.col("model") == model) & (pl.col("metric") == METRIC))
        found = {name: (value, error) for name, value, error in rows.select("slice", "value", "std_error").iter_rows()}
        return Figures(found.get("cold", (None, None)), found.get("warm", (None, None)))


class Search(NamedTuple):
    trials: pl.DataFrame  # one row per trial: number, state, params, valid HR@10 per slice, seconds
    best: TwoTowerConfig  # the config of the trial with the best objective
    best_trial: int
    objective_slice: str  # 'cold', or 'all' when no cold user has a validation target


def suggest(trial: optuna.Trial, default: TwoTowerConfig) -> TwoTowerConfig:
    """`default` with the searched knobs drawn by the trial; every range is widened to hold the default's value."""
    values: dict[str, Any] = {}
    for name, (low, high, log) in FLOATS.items():
        value = getattr(default, name)
        values[name] = trial.suggest_float(name, min(low, value), max(high, value), log=log)
    for name, choices in CHOICES.items():
        value = _param(getattr(default, name))
        drawn = trial.suggest_categorical(name, choices if value in choices else (*choices, value))
        values[name] = tuple(int(width) for width in drawn.split("-")) if name == "hidden" else drawn
    return replace(default, **values)


def params_of(config: TwoTowerConfig) -> dict[str, Any]:
    """The searched knobs of a config as trial parameters (what enqueues the default as trial 0)."""
    return {name: _param(getattr(config, name)) for name in (*FLOATS, *CHOICES)}


def score_two_tower(frames: FeatureFrames, hgnn: pl.DataFrame | None, text: pl.DataFrame,
                    profile: pl.DataFrame | None, config: EvaluateConfig, chosen: EvaluationSet,
                    phase: Phase) -> pl.DataFrame:
    """2T-HGNN with `config.two_tower`, fitted on the phase's fitted periods, scored on `chosen`."""
    builders = model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users, phase.fitted)
    return score(builders, (PRODUCTION_MODEL,), frames, chosen, config)[0]


def search(frames: FeatureFrames, hgnn: pl.DataFrame | None, text: pl.DataFrame, profile: pl.DataFrame | None,
           config: EvaluateConfig, trials: int, seed: int, timeout_s: float | None = None) -> Search:
    """TPE over FLOATS and CHOICES around `config.two_tower` (trial 0), maximising validation HR@10 on cold users.

    Reads no holdout row: they are dropped before the evaluation set is drawn.
    """
    if trials < 1:
        raise ValueError(f"trials must be at least 1 (got {trials}); trial 0 is the default config")
    frames = protocol.without_holdout(frames)
    chosen = evaluation_set(frames, config, VALIDATION)
    warm = chosen.user_stats.filter(pl.col("is_warm"))["user_id"].cast(pl.String)
    cold_users = int((~chosen.users.cast(pl.String).is_in(warm.implode())).sum())
    objective_slice = "cold" if cold_users else "all"

    def objective(trial: optuna.Trial) -> float:
        tt = suggest(trial, config.two_tower)
        started = time.perf_counter()
        metrics = score_two_tower(frames, hgnn, text, profile, replace(config, two_tower=tt), chosen, VALIDATION)
        rows = metrics.filter(pl.col("metric") == METRIC)
        for name, value, error in rows.select("slice", "value", "std_error").iter_rows():
            trial.set_user_attr(f"{name} {METRIC}", value)
            trial.set_user_attr(f"{name} se", error)
        seconds = time.perf_counter() - started
        trial.set_user_attr("seconds", round(seconds, 1))
        figures = Figures.of(metrics, PRODUCTION_MODEL)
        print(f"  trial {trial.number}: valid cold {METRIC} {_cell(figures.cold)}, warm {_cell(figures.warm)} "
              f"({seconds:.0f} s) {trial.params}", flush=True)
        value = trial.user_attrs.get(f"{objective_slice} {METRIC}")
        if value is None:
            raise ValueError(f"no validation {METRIC} on slice {objective_slice!r}; the validation period has no "
                             "target-type targets: widen valid_days in crossfade.yaml and rerun the nightly chain")
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(params_of(config.two_tower))
    # a diverging learning rate ends its trial, not the search
    study.optimize(objective, n_trials=trials, timeout=timeout_s, catch=(FloatingPointError,))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError(f"no trial finished ({[t.state.name for t in study.trials]}); raise --timeout-s")
    rows = [{"trial": t.number, "state": t.state.name, **t.params,
             **{f"valid {name}": t.user_attrs.get(f"{name} {METRIC}") for name in ("cold", "warm")},
             **{f"se {name}": t.user_attrs.get(f"{name} se") for name in ("cold", "warm")},
             "seconds": t.user_attrs.get("seconds")} for t in study.trials]
    best = study.best_trial
    return Search(pl.DataFrame(rows), _config_of(best.params, config.two_tower), best.number, objective_slice)


def holdout(frames: FeatureFrames, hgnn: pl.DataFrame | None, text: pl.DataFrame, profile: pl.DataFrame | None,
            config: EvaluateConfig, configs: dict[str, TwoTowerConfig]) -> pl.DataFrame:
    """The baselines (config's settings) and each named 2T-HGNN config, refitted on train + valid, on the holdout."""
    chosen = evaluation_set(frames, config, HOLDOUT)
    builders = model_builders(frames, hgnn, text, profile, chosen.catalogue, config, chosen.users, HOLDOUT.fitted)
    blocks = [score(builders, BASELINES, frames, chosen, config)[0]]
    for name, tt in configs.items():
        metrics = score_two_tower(frames, hgnn, text, profile, replace(config, two_tower=tt), chosen, HOLDOUT)
        blocks.append(metrics.with_columns(model=pl.lit(name)))
    return pl.concat(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("CROSSFADE_HOME", ".crossfade")),
                        help="CROSSFADE_HOME whose warehouse holds a finished nightly run (read, never written)")
    parser.add_argument("--trials", type=int, default=20, help="trials, the default config's included")
    parser.add_argument("--seed", type=int, default=0, help="seed of the TPE sampler")
    parser.add_argument("--timeout-s", type=float, default=None, help="stop starting trials after this many seconds")
    # one thread: on a busy 2-core host torch's threads spin at barriers and a fit runs slower with two
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads per fit (0: torch's default)")
    args = parser.parse_args()
    with torch_threads(args.torch_threads or None):
        run(args)


def run(args: argparse.Namespace) -> None:
    """Validate the baselines, search, refit and score the holdout once, print the tables and the RESULT line."""
    started = time.perf_counter()
    settings = load_settings(home=args.home)
    frames, hgnn, text, profile, default = load(Store(args.home / "warehouse" / "crossfade.duckdb"))
    config = EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types, k=settings.k,
                            max_users=settings.eval_max_users, seed=settings.seed, models=BASELINES, two_tower=default)
    print(f"{args.home}: {frames.interactions.height:,} interactions; searching {args.trials} trials "
          f"(seed {args.seed}), baselines validated first", flush=True)
    validation = protocol.validate(frames, hgnn, text, profile, config)
    config = validation.config
    print(f"baselines validated ({time.perf_counter() - started:.0f} s)", flush=True)
    found = search(frames, hgnn, text, profile, config, args.trials, args.seed, args.timeout_s)
    default_row = found.trials.filter(pl.col("trial") == 0).row(0, named=True)
    best_row = found.trials.filter(pl.col("trial") == found.best_trial).row(0, named=True)
    valid_rows = [_row(f"2T-HGNN best (trial {found.best_trial})", best_row),
                  _row("2T-HGNN default (trial 0)", default_row)]
    valid_rows += [_figures_row(name, Figures.of(validation.metrics, name)) for name in BASELINES]
    refits = {"best": found.best} | ({} if found.best == default else {"default": default})
    scored = holdout(frames, hgnn, text, profile, config, refits)
    default_name = "default" if "default" in refits else "best"
    holdout_rows = [_figures_row(f"2T-HGNN best (trial {found.best_trial})", Figures.of(scored, "best")),
                    _figures_row("2T-HGNN default (trial 0)", Figures.of(scored, default_name))]
    holdout_rows += [_figures_row(name, Figures.of(scored, name)) for name in BASELINES]
    with pl.Config(tbl_rows=200, tbl_cols=30, tbl_width_chars=300, tbl_hide_dataframe_shape=True,
                   tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, float_precision=4):
        print(f"\ntrials (objective: valid {found.objective_slice} {METRIC}):\n{found.trials}")
        print(f"\nvalidation (fitted on train), {METRIC} ± se:\n{pl.DataFrame(valid_rows)}")
        print(f"\nholdout (refitted on train + valid, scored once), {METRIC} ± se:\n{pl.DataFrame(holdout_rows)}")
    print(f"\nbest config (trial {found.best_trial}): {params_of(found.best)}")
    print(f"default config: {params_of(default)}")
    print(f"baseline settings validated: {[getattr(config, name) for name in protocol.GRIDS]}")
    slice_name = found.objective_slice
    holdout_values = {name: _slice_value(scored, name, slice_name) for name in (*BASELINES, "best")}
    baselines = {name: value for name, value in holdout_values.items() if name != "best" and value is not None}
    if not baselines:
        raise SystemExit(f"no baseline has a holdout {METRIC} on slice {slice_name!r}; the holdout has no "
                         "target-type targets there")
    best_baseline = max(baselines, key=baselines.__getitem__)
    ours, baseline = holdout_values["best"] or 0.0, baselines[best_baseline]
    print(f"\n{time.perf_counter() - started:.0f} s in all; holdout {slice_name} {METRIC}: 2T-HGNN best {ours:.4f}, "
          f"best baseline {best_baseline} {baseline:.4f}")
    ratio = ours / baseline if baseline else float("inf")
    print(f"RESULT search_2t_hgnn ours={ours:.4f} baseline={baseline:.4f} ratio={ratio:.3f} unit=hr@10_{slice_name}")


def load(store: Store) -> tuple[FeatureFrames, pl.DataFrame, pl.DataFrame, pl.DataFrame | None, TwoTowerConfig]:
    """Feature frames, HGNN vectors, text and profile embeddings, and the newest registered two-tower config."""
    with store.read() as con:
        newest = registry.latest(con)
        if newest is None or not table_exists(con, "models.hgnn_item_embeddings"):
            raise SystemExit(f"{store.database}: no finished model stage (models.registry, "
                             "models.hgnn_item_embeddings); run `crossfade run` on this home first")
        frames = FeatureFrames(**readers.feature_tables(con))
        text, _ = text_or_hashed(readers.item_text_embeddings(con), frames.items)
        profile = readers.profile_embeddings(con)
        hgnn = con.sql("select item_id, item_type, embedding from models.hgnn_item_embeddings").pl()
    saved = newest["config"]["two_tower"]
    known = {field.name for field in fields(TwoTowerConfig)}
    dropped = sorted(set(saved) - known)
    if dropped:  # a home registered by an older version: settings since removed are left out
        print(f"{store.database}: registered two-tower settings no longer known, left out: {dropped}",
              file=sys.stderr)
    default = TwoTowerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in known})
    return frames, hgnn, text, profile, default


def validation_inputs(home: Path) -> tuple[FeatureFrames, pl.DataFrame, pl.DataFrame, pl.DataFrame | None,
                                            EvaluateConfig]:
    """A home's frames, vectors and the models stage's validation config: every servable model, the
    nightly settings and the newest registered two-tower config (as `models/two_tower` validates)."""
    settings = load_settings(home=home)
    frames, hgnn, text, profile, two_tower = load(Store(home / "warehouse" / "crossfade.duckdb"))
    config = EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types, k=settings.k,
                            max_users=settings.eval_max_users, seed=settings.seed, models=protocol.SERVABLE,
                            two_tower=two_tower)
    return frames, hgnn, text, profile, config


class RunSplit(NamedTuple):
    """A run home's data and chosen settings, ready to fit and score one split as the nightly chain did."""

    store: Store
    frames: FeatureFrames  # without the holdout's rows when the split is validation
    hgnn: pl.DataFrame
    text: pl.DataFrame
    profile: pl.DataFrame | None
    config: EvaluateConfig  # the nightly settings with the registry's choices on validation
    phase: Phase
    chosen: EvaluationSet


def run_split(home: Path, split: str) -> RunSplit:
    """The home's features, vectors and the registry's chosen settings, set up for 'valid' or 'holdout'."""
    settings = load_settings(home=home)
    store = Store(home / "warehouse" / "crossfade.duckdb")
    frames, hgnn, text, profile, two_tower = load(store)
    with store.read() as con:
        chosen_settings = registry.latest(con)["metrics"]
    config = protocol.tuned(EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types,
                                           k=settings.k, max_users=settings.eval_max_users, seed=settings.seed,
                                           two_tower=two_tower), chosen_settings)
    phase = VALIDATION if split == "valid" else HOLDOUT
    if phase is VALIDATION:
        frames = protocol.without_holdout(frames)
    return RunSplit(store, frames, hgnn, text, profile, config, phase, evaluation_set(frames, config, phase))


def _config_of(params: dict[str, Any], default: TwoTowerConfig) -> TwoTowerConfig:
    values = {name: tuple(int(w) for w in value.split("-")) if name == "hidden" else value
              for name, value in params.items()}
    return replace(default, **values)


def _param(value: Any) -> Any:
    return "-".join(str(part) for part in value) if isinstance(value, tuple) else value


def _cell(figure: tuple[float | None, float | None]) -> str:
    value, error = figure
    return "n/a" if value is None else f"{value:.4f} ± {error or 0.0:.4f}"


def _row(name: str, trial: dict[str, Any]) -> dict[str, str]:
    cells = {f"{s} {METRIC}": _cell((trial[f"valid {s}"], trial[f"se {s}"])) for s in ("cold", "warm")}
    return {"model": name, **cells}


def _figures_row(name: str, figures: Figures) -> dict[str, str]:
    return {"model": name, f"cold {METRIC}": _cell(figures.cold), f"warm {METRIC}": _cell(figures.warm)}


def _slice_value(metrics: pl.DataFrame, model: str, slice_name: str) -> float | None:
    rows = metrics.filter((pl.col("model") == model) & (pl.col("slice") == slice_name) & (pl.col("metric") == METRIC))
    return rows["value"][0] if rows.height else None


if __name__ == "__main__":
    main()
