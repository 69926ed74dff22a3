"""MovieLens-100K converter: the mapping on hand-made ml-100k files, and the real data through `crossfade run`."""
from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from warehouse import ingest, landing
from warehouse.store import Store
from worlds import movielens
from tests.worlds.test_world_matrix import refusing_endpoint  # noqa: F401 (fixture)

UTC = dt.timezone.utc
RATINGS = [  # user, item, rating, time: three days, one rating of each value
    (1, 1, 5, dt.datetime(1997, 9, 20, 10, tzinfo=UTC)),
    (1, 2, 3, dt.datetime(1997, 9, 20, 11, tzinfo=UTC)),
    (2, 1, 4, dt.datetime(1997, 9, 21, 9, tzinfo=UTC)),
    (2, 3, 2, dt.datetime(1997, 9, 22, 12, tzinfo=UTC)),
    (3, 4, 1, dt.datetime(1997, 9, 22, 23, 59, 59, tzinfo=UTC)),
]
MOVIES = [  # id, title, year, classes
    (1, "Heat", "1995", "Action Crime Thriller"),
    (2, "Toy Story", "1995", "Animation Children's Comedy"),
    (3, "Clueless", "1995", "Comedy Romance"),
    (4, "Nosferatu", "", "Horror"),
]
PEOPLE = [(1, 17, "M", "student", "85711"), (2, 24, "F", "writer", "94043"), (3, 60, "M", "retired", "32067")]
TWO_HOURS = 7_200_000


@pytest.fixture
def ml_source(tmp_path: Path) -> Path:
    """ml-100k-shaped files in the recbole layout: tab-separated, typed headers."""
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "ml-100k.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + "".join(
        f"{user}\t{item}\t{rating}\t{int(at.timestamp())}\n" for user, item, rating, at in RATINGS))
    (folder / "ml-100k.item").write_text("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
                                         + "".join("\t".join(map(str, row)) + "\n" for row in MOVIES))
    (folder / "ml-100k.user").write_text("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
                                         + "".join("\t".join(map(str, row)) + "\n" for row in PEOPLE))
    return folder


def read_events(home: Path) -> pl.DataFrame:
    return pl.read_parquet(home / "landing" / "events" / "*" / "*.parquet", include_file_paths="file").sort("event_id")


def test_ratings_become_plays_with_completion_and_saves_for_four_and_five(ml_source: Path, tmp_path: Path) -> None:
    summary = movielens.ml100k_landing(ml_source, tmp_path / "home")
    events = read_events(tmp_path / "home")
    assert events.select("event_id", "user_id", "item_id", "event_type", "ms_played").rows() == [
        ("ml1-1-play", "u1", "m1", "play", TWO_HOURS),
        ("ml1-1-save", "u1", "m1", "save", 0),
        ("ml1-2-play", "u1", "m2", "play", TWO_HOURS * 3 // 5),
        ("ml2-1-play", "u2", "m1", "play", TWO_HOURS * 4 // 5),
        ("ml2-1-save", "u2", "m1", "save", 0),
        ("ml2-3-play", "u2", "m3", "play", TWO_HOURS * 2 // 5),
        ("ml3-4-play", "u3", "m4", "play", TWO_HOURS // 5),
    ]
    assert events["ts"].to_list()[-1] == RATINGS[-1][3]
    assert set(events["context"]) == {"home"} and set(events["country"]) == {"US"}
    assert (summary.ratings, summary.events, summary.users, summary.partitions) == (5, 7, 3, 3)


def test_daily_layout_puts_each_event_in_the_partition_of_its_own_day(ml_source: Path, tmp_path: Path) -> None:
    movielens.ml100k_landing(ml_source, tmp_path / "home", arrival="daily")
    events = read_events(tmp_path / "home")
    folders = events.select(pl.col("file").str.extract(r"date=([0-9-]+)"), pl.col("ts").dt.date().cast(pl.String))
    assert folders["file"].to_list() == folders["ts"].to_list()
    assert landing.event_partitions(tmp_path / "home" / "landing") == ["1997-09-20", "1997-09-21", "1997-09-22"]


def test_single_layout_lands_everything_on_the_last_day(ml_source: Path, tmp_path: Path) -> None:
    summary = movielens.ml100k_landing(ml_source, tmp_path / "home", arrival="single")
    assert landing.event_partitions(tmp_path / "home" / "landing") == ["1997-09-22"]
    assert (summary.partitions, read_events(tmp_path / "home").height) == (1, 7)
    assert "volume_tolerance" not in yaml.safe_load((tmp_path / "home" / "crossfade.yaml").read_text())


def test_dark_genres_are_the_target_type_and_items_keep_their_metadata(ml_source: Path, tmp_path: Path) -> None:
    summary = movielens.ml100k_landing(ml_source, tmp_path / "home")
    items = pl.read_parquet(tmp_path / "home" / "landing" / "items" / "items.parquet").sort("item_id")
    assert items.select("item_id", "item_type", "title", "description", "release_date").rows() == [
        ("m1", "audiobook", "Heat", "Action Crime Thriller 1995", dt.date(1995, 1, 1)),
        ("m2", "podcast", "Toy Story", "Animation Children's Comedy 1995", dt.date(1995, 1, 1)),
        ("m3", "podcast", "Clueless", "Comedy Romance 1995", dt.date(1995, 1, 1)),
        ("m4", "audiobook", "Nosferatu", "Horror", None),
    ]
    assert items["genres"].to_list()[0] == ["Action", "Crime", "Thriller"]
    assert set(items["duration_ms"]) == {TWO_HOURS}
    assert summary.items_by_type == {"audiobook": 2, "podcast": 2}


def test_users_get_age_buckets_and_occupation_as_plan(ml_source: Path, tmp_path: Path) -> None:
    movielens.ml100k_landing(ml_source, tmp_path / "home")
    users = pl.read_parquet(tmp_path / "home" / "landing" / "users" / "users.parquet").sort("user_id")
    assert users.select("user_id", "age_bucket", "plan", "country").rows() == [
        ("u1", "<18", "student", "US"), ("u2", "18-24", "writer", "US"), ("u3", "55+", "retired", "US")]
    assert set(users["signup_date"]) == {movielens.SIGNUP}


def test_suggested_config_covers_the_data_and_loads_as_settings(ml_source: Path, tmp_path: Path) -> None:
    from warehouse.settings import load_settings

    movielens.ml100k_landing(ml_source, tmp_path / "home")
    settings = load_settings(environ={}, home=tmp_path / "home")
    assert (settings.as_of, settings.partitions_start) == (dt.date(1997, 9, 23), dt.date(1997, 9, 20))
    assert (settings.target_type, settings.graph_types, settings.min_co_listeners) == ("audiobook", ("podcast", "audiobook"), 2)
    assert settings.volume_tolerance == 0.5  # no partition has 3 earlier ones: the default is kept


def test_every_converted_row_passes_ingestion(ml_source: Path, tmp_path: Path) -> None:
    movielens.ml100k_landing(ml_source, tmp_path / "home")
    root = tmp_path / "home" / "landing"
    with Store(tmp_path / "home" / "warehouse" / "crossfade.duckdb").write() as con:
        items = ingest.ingest_items(con, root, ("podcast", "audiobook"))
        users = ingest.ingest_users(con, root)
        events = [ingest.ingest_events(con, root, key) for key in landing.event_partitions(root)]
    assert (items.accepted, items.rejected, users.accepted, users.rejected) == (4, 0, 3, 0)
    assert [(r.accepted, r.rejected, r.duplicates) for r in events] == [(3, 0, 0), (2, 0, 0), (2, 0, 0)]


def test_volume_ratios_follow_the_raw_gate_rule() -> None:
    days = [dt.date(1998, 1, 1) + dt.timedelta(days=n) for n in range(5)] + [dt.date(1998, 2, 1)]
    counts = pl.DataFrame({"arrival": days, "events": [10, 20, 30, 40, 5, 7]})
    ratios = movielens.volume_ratios(counts)
    # day 4: median(10, 20, 30) = 20; day 5: median(10, 20, 30, 40) = 25; 1 Feb: nothing in the 14 days before
    assert ratios["volume_vs_median"].to_list() == [None, None, None, 2.0, 0.2, None]


def test_replacing_a_landing_zone_needs_consent(ml_source: Path, tmp_path: Path) -> None:
    movielens.ml100k_landing(ml_source, tmp_path / "home")
    with pytest.raises(FileExistsError, match="replace=True"):
        movielens.ml100k_landing(ml_source, tmp_path / "home")
    assert movielens.ml100k_landing(ml_source, tmp_path / "home", replace=True).events == 7


def test_locate_finds_the_files_under_crossfade_data(ml_source: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFADE_DATA", str(ml_source.parent))
    assert movielens.locate_ml100k() == ml_source
    monkeypatch.setenv("CROSSFADE_DATA", str(ml_source.parent / "elsewhere"))
    assert movielens.locate_ml100k() is None


def real_ml100k() -> Path:
    """The real files; missing data fails in CI (the Makefile fetches it there) and skips elsewhere."""
    found = movielens.locate_ml100k()
    if found is None:
        message = (f"ml-100k not found in {movielens.data_dir()}: run `python -m worlds.movielens fetch` "
                   "(make install does it)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


# Short training keeps the whole chain to minutes on 2 cores; the verdicts below do not depend on it
# (Popularity is the ceiling for ml-100k's cold users, who joined during the holdout).
SHORT_TRAINING = ("ops:\n  models__hgnn_item_embeddings: {config: {max_epochs: 1}}\n"
                  "  models__two_tower: {config: {epochs: 2}}\n")


def crossfade_run(home: Path, *args: str, timeout: float, llm_endpoint: str = "") -> subprocess.CompletedProcess:
    """`crossfade run` in its own process (Dagster's partitions read partitions_start from home when the
    definitions load), with short training; with `llm_endpoint`, LLM calls go there."""
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CROSSFADE_", "DAGSTER_"))}
    # the judge's panels have their own tests; here they only have to run
    env.update(CROSSFADE_HOME=str(home), HF_HUB_OFFLINE="1", CROSSFADE_LLM_CALL_BUDGET="1", CROSSFADE_JUDGE_USERS="2",
               CROSSFADE_JUDGE_PANEL_USERS="4", CROSSFADE_JUDGE_PAIRWISE_PANEL_USERS="1")
    if llm_endpoint:
        env.update(CROSSFADE_LLM_BACKEND="http", CROSSFADE_LLM_BASE_URL=llm_endpoint, CROSSFADE_LLM_MODEL="refusing")
    run_config = home / "short_training.yaml"
    run_config.write_text(SHORT_TRAINING)
    return subprocess.run([sys.executable, "-m", "pipelines.cli", "run", *args, "--run-config", str(run_config)],
                          capture_output=True, text=True, timeout=timeout, env=env)


def published(home: Path, query: str) -> list[tuple]:
    with Store(home / "warehouse" / "crossfade.duckdb").read() as con:
        return con.execute(query).fetchall()


@pytest.mark.slow
def test_daily_ml100k_export_stops_at_the_raw_volume_gate(tmp_path: Path) -> None:
    home = tmp_path / "home"
    summary = movielens.ml100k_landing(real_ml100k(), home, arrival="daily")
    assert (summary.partitions, summary.volume_days_outside_band, summary.volume_ratio_max) == (213, 38, 20.547)
    done = crossfade_run(home, "--as-of", summary.as_of, "--select", "raw", timeout=600)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "check raw_events_suite                       FAILED" in done.stdout
    assert "| expect_column_values_to_be_between | volume_vs_median | 38 |" in done.stdout
    # Nothing was lost on the way: the gate judged volume, not rows; and readers see none of it (not published).
    store = Store(home / "warehouse" / "crossfade.duckdb")
    with store.audit() as con:
        assert con.execute("select count(*) from raw.events").fetchall() == [(summary.events,)]
    with store.read() as con:  # the empty table the first write created, published with the catalogue
        assert con.execute("select count(*) from raw.events").fetchall() == [(0,)]
    assert "raw.events" in store.pending_stages()
    assert "not published (the stage's gate" in done.stdout


PASSED_BEFORE_PROMOTION = (
    "raw_items_suite", "raw_users_suite", "raw_events_suite", "features_splits_suite", "features_interactions_suite",
    "features_co_listen_edges_suite", "features_item_stats_suite", "features_user_stats_suite",
    "enrich_item_topics_suite", "enrich_user_profiles_suite", "enrich_text_embeddings_suite",
    "models_hgnn_item_embeddings_suite",
)


def verdicts(stdout: str) -> dict[str, str]:
    """check name -> passed / FAILED, from the `  check <name>  <verdict>` lines `crossfade run` prints."""
    return dict(re.findall(r"\]   check (\S+) +(passed|FAILED)", stdout))


@pytest.mark.slow
def test_ml100k_chain_serves_the_model_that_validated_best_per_slice(
        tmp_path: Path, refusing_endpoint: str) -> None:  # noqa: F811 (fixture)
    # On ml-100k nearly every cold user joined MovieLens during the period that scores them, with no rating
    # before it: Popularity is the best anyone can do for them. The serving plan, chosen on validation, gives
    # the cold slice to Popularity; the gate compares what is served with the best baseline and passes, so
    # the chain publishes, each row naming its model, and the holdout scores what is served beside every model.
    home = tmp_path / "home"
    summary = movielens.ml100k_landing(real_ml100k(), home, arrival="single")
    started = time.perf_counter()
    # the LLM steps defer their calls (an endpoint that refuses): what is compared here needs no LLM output
    chain = crossfade_run(home, "--as-of", summary.as_of, timeout=2400, llm_endpoint=refusing_endpoint)
    chain_seconds = time.perf_counter() - started
    assert chain.returncode == 0, chain.stdout[-4000:] + chain.stderr[-4000:]
    assert set(verdicts(chain.stdout).values()) == {"passed"}
    assert set(PASSED_BEFORE_PROMOTION) <= set(verdicts(chain.stdout))
    [(status, plan)] = published(home, "select status, metrics->'plan' from models.registry")
    plan = json.loads(plan)
    assert status == "promoted" and plan["cold"]["model"] == "popularity", plan
    served = dict(published(home, "select model, count(distinct user_id) from serving.candidates group by 1"))
    assert set(served) <= {plan["cold"]["model"], plan["warm"]["model"], "fallback"} and served["popularity"] > 0
    from models.evaluate import LLM_ABLATION, MODELS
    from models.protocol import SERVED

    rows = published(home, "select model, count(distinct slice) filter (where users > 0), min(model_version) "
                           "from eval.offline_metrics where metric = 'ndcg@10' and split = 'holdout' "
                           "group by 1 order by 1")
    model_version = published(home, "select model_version from models.registry")[0][0]
    assert rows == [(model, 4, model_version) for model in sorted({*MODELS, LLM_ABLATION, SERVED})]
    cold = {model: (value, error) for model, value, error in published(
        home, "select model, value, std_error from eval.offline_metrics where split = 'holdout' and slice = 'cold' "
              "and metric = 'hr@10'")}
    best = max(cold[model][0] for model in ("popularity", "item_knn", "ease", "als"))
    assert cold[SERVED][0] + cold[SERVED][1] >= best  # what is served is the best baseline within a standard error
    print(f"ml-100k: chain {chain_seconds:.0f} s")
