"""The Parquet exchange of candidate shards: written apart, read back complete, their union equal to one process."""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets import serving
from assets.resources import Crossfade, Warehouse
from models import two_tower
from models.candidates import COLUMNS, ServingInputs, generate
from models.recommender import FeatureFrames
from models.shards import assign_shards
from models.text_features import hashed_text_embeddings
from pipelines.candidate_shards import candidate_shards_job
from tests.conftest import WORLD_AS_OF, IngestedWorld
from warehouse import exchange, readers
from warehouse.exchange import ExchangeError, check_uri, read_candidate_shards, write_candidate_shard
from warehouse.settings import load_settings
from tests.conftest import TYPES

DAY = dt.date(2026, 11, 2)
SMALL = two_tower.TwoTowerConfig(**TYPES, hidden=(32, 16), epochs=1, use_hgnn=False, seed=0)


def rows(*users: str, k: int = 2) -> pl.DataFrame:
    """k candidate rows per user, in the exchange's column layout."""
    return pl.DataFrame({
        "user_id": [user for user in users for _ in range(k)],
        "item_id": [f"a{rank}" for _ in users for rank in range(1, k + 1)],
        "rank": [rank for _ in users for rank in range(1, k + 1)],
        "score": [1.0 / rank for _ in users for rank in range(1, k + 1)],
        "explanation": ["popular on the platform"] * (len(users) * k),
        "is_fallback": [True] * (len(users) * k),
        "model_version": ["popularity"] * (len(users) * k),
        "model": ["fallback"] * (len(users) * k),
    }).cast(COLUMNS)  # type: ignore[arg-type]


def write(uri: Path | str, index: int, shards: int, frame: pl.DataFrame, day: dt.date = DAY) -> int:
    with duckdb.connect() as con:
        return write_candidate_shard(con, str(uri), day, index, shards, [frame], COLUMNS)


def read(uri: Path | str, shards: int | None = None, day: dt.date = DAY) -> pl.DataFrame:
    with duckdb.connect() as con:
        return read_candidate_shards(con, str(uri), day, shards).pl()


# --- the URI setting ---------------------------------------------------------------------------------

def test_exchange_uris_are_checked_and_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_uri("") == "" and check_uri("  ") == ""
    assert check_uri("exchange") == str(tmp_path / "exchange")
    assert check_uri("file:///data/exchange/") == "/data/exchange"
    assert check_uri("s3://crossfade-prod/exchange/") == "s3://crossfade-prod/exchange"
    assert check_uri("gs://bucket") == "gs://bucket" and check_uri("az://container/x") == "az://container/x"
    for bad, fragment in [("https://cdn.example.com/x", "cannot write or list"),
                          ("ftp://host/x", "s3://, gs:// or az://"), ("s3://", "needs a bucket"),
                          ("file://relative/x", "absolute path"), ("/data/shard-*", "glob characters")]:
        with pytest.raises(ValueError, match=fragment):
            check_uri(bad)


# --- writing and reading shards ----------------------------------------------------------------------

def test_shards_written_apart_read_back_as_one_table(tmp_path: Path) -> None:
    users = [f"u{n}" for n in range(10)]
    for index in range(3):
        assert write(tmp_path, index, 3, rows(*users[index::3])) == len(users[index::3]) * 2
    assert (tmp_path / "serving/candidates/as_of=2026-11-02/shard=01-of-03/part.parquet").is_file()
    back = read(tmp_path, shards=3)
    assert back.select(list(COLUMNS)).sort("user_id", "rank").equals(rows(*users).sort("user_id", "rank"))
    assert set(back["as_of"]) == {DAY}
    assert back.group_by("shard").agg(pl.col("user_id").n_unique())["user_id"].sort().to_list() == [3, 3, 4]


def test_an_empty_shard_is_a_file_with_no_rows(tmp_path: Path) -> None:
    write(tmp_path, 0, 2, rows("u1"))
    with duckdb.connect() as con:
        assert write_candidate_shard(con, str(tmp_path), DAY, 1, 2, [], COLUMNS) == 0
    assert read(tmp_path, 2)["user_id"].to_list() == ["u1", "u1"]


def test_retrying_a_shard_replaces_it(tmp_path: Path) -> None:
    write(tmp_path, 0, 2, rows("u1"))
    write(tmp_path, 1, 2, rows("u2", "u3"))
    write(tmp_path, 1, 2, rows("u2", "u3", k=3))  # the retried step's answer
    back = read(tmp_path, 2)
    assert back.height == 2 + 6 and back.filter(pl.col("user_id") == "u2")["rank"].sort().to_list() == [1, 2, 3]
    assert not any(path.name.startswith(".") for path in tmp_path.rglob("*"))  # no temporary file left over


def test_a_half_written_temporary_file_is_ignored(tmp_path: Path) -> None:
    write(tmp_path, 0, 1, rows("u1"))
    (tmp_path / "serving/candidates/as_of=2026-11-02/shard=00-of-01/.part.parquet.dead.tmp").write_bytes(b"PAR1")
    assert read(tmp_path, 1).height == 2


def test_a_missing_shard_is_named(tmp_path: Path) -> None:
    for index in (0, 1, 3):
        write(tmp_path, index, 4, rows(f"u{index}"))
    with pytest.raises(ExchangeError, match=r"missing shards \[2\] of 4 for as_of=2026-11-02 \(3 of 4 present\)"):
        read(tmp_path)
    with pytest.raises(ExchangeError, match="no candidate shards for as_of=2026-11-03"):
        read(tmp_path, day=DAY + dt.timedelta(days=1))


def test_a_duplicated_shard_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 0, 2, rows("u0"))
    write(tmp_path, 1, 2, rows("u1"))
    day = tmp_path / "serving/candidates/as_of=2026-11-02"
    shutil.copytree(day / "shard=01-of-02", day / "shard=1-of-02")  # the same shard under another spelling
    with pytest.raises(ExchangeError, match=r"shards present more than once for as_of=2026-11-02: \{1: "):
        read(tmp_path)


def test_shards_of_two_runs_with_different_counts_are_refused(tmp_path: Path) -> None:
    write(tmp_path, 0, 2, rows("u0"))
    write(tmp_path, 1, 2, rows("u1"))
    write(tmp_path, 0, 3, rows("u0"))  # left by an earlier run cut into 3
    with pytest.raises(ExchangeError, match=r"disagree on the shard count: \{2: .*3: "):
        read(tmp_path)


def test_a_count_other_than_the_run_expects_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 0, 1, rows("u0"))
    with pytest.raises(ExchangeError, match="holds shards of 1 for as_of=2026-11-02, this run expects 4"):
        read(tmp_path, shards=4)


def test_a_user_in_two_shards_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 0, 2, rows("u0", "u7"))
    write(tmp_path, 1, 2, rows("u1", "u7"))
    with pytest.raises(ExchangeError, match=r"users in more than one shard .*'u7', \['00-of-02', '01-of-02'\]"):
        read(tmp_path)


def test_a_stray_file_is_refused(tmp_path: Path) -> None:
    write(tmp_path, 0, 1, rows("u0"))
    (tmp_path / "serving/candidates/as_of=2026-11-02/shard=00-of-01/part (copy).parquet").write_bytes(b"")
    with pytest.raises(ExchangeError, match=r"unexpected files \['shard=00-of-01/part \(copy\).parquet'\]"):
        read(tmp_path)


def test_a_quote_in_the_path_round_trips(tmp_path: Path) -> None:
    uri = tmp_path / "o'brien's exchange"
    write(uri, 0, 1, rows("u1"))
    assert read(uri, 1)["user_id"].to_list() == ["u1", "u1"]


@pytest.mark.parametrize(("uri", "extension"), [("s3://crossfade-test/exchange", "httpfs"),
                                                 ("gs://crossfade-test/exchange", "httpfs"),
                                                 ("az://crossfade-test/exchange", "azure")])
def test_a_remote_uri_without_its_extension_is_a_clear_error(tmp_path: Path, uri: str, extension: str) -> None:
    # An empty extension directory stands for a host where the extension was never installed.
    with duckdb.connect(config={"extension_directory": str(tmp_path)}) as con:
        for attempt in (lambda: write_candidate_shard(con, uri, DAY, 0, 1, [rows("u1")], COLUMNS),
                        lambda: read_candidate_shards(con, uri, DAY)):
            with pytest.raises(ExchangeError, match=f"needs DuckDB's {extension} extension") as error:
                attempt()
            assert f"install_extension('{extension}')" in str(error.value) and uri in str(error.value)


def test_no_exchange_configured_is_a_clear_error() -> None:
    with pytest.raises(ExchangeError, match="set CROSSFADE_EXCHANGE_URI"):
        write("", 0, 1, rows("u1"))


# --- sharded scoring equals one process -----------------------------------------------------------

@pytest.fixture(scope="module")
def world_inputs(ingested_world: IngestedWorld) -> tuple[ServingInputs, two_tower.TwoTowerModel]:
    """The sample world's inputs with a small trained two-tower; some users fall back to popularity."""
    with ingested_world.store.read() as con:
        frames = FeatureFrames(**readers.feature_tables(con))
    text = hashed_text_embeddings(frames.items)
    model = two_tower.fit(frames, SMALL, text_embeddings=text)
    # Users whose every history item lacks a text vector get the popularity fallback.
    history = frames.history(("train", "holdout"))
    loners = history.group_by("user_id").len().sort("len", "user_id")["user_id"].head(5)
    unknown = history.filter(pl.col("user_id").is_in(loners.implode()))["item_id"].unique()
    inputs = ServingInputs(frames, text.filter(~pl.col("item_id").is_in(unknown.implode())), WORLD_AS_OF,
                           "audiobook", 20)
    return inputs, model


def write_shard(uri: Path | str, inputs: ServingInputs, model: two_tower.TwoTowerModel | None, model_version: str,
                index: int, shards: int) -> int:
    """What a shard step does once it has read its state: score the shard's users into its exchange file."""
    with duckdb.connect() as con:
        return write_candidate_shard(con, str(uri), inputs.as_of, index, shards,
                                     generate(inputs, model, model_version, shard=(index, shards)), COLUMNS)


@pytest.mark.parametrize("with_model", [True, False], ids=["two_tower", "popularity_only"])
def test_union_of_shards_equals_one_process(world_inputs: tuple[ServingInputs, two_tower.TwoTowerModel],
                                            tmp_path: Path, with_model: bool) -> None:
    inputs, trained = world_inputs
    model, version = (trained, "v1") if with_model else (None, "none")
    single = pl.concat(list(generate(inputs, model, version))).sort("user_id", "rank")
    shards = 4
    written = [write_shard(tmp_path, inputs, model, version, index, shards) for index in range(shards)]
    union = read(tmp_path, shards, day=WORLD_AS_OF)
    assert sum(written) == union.height == single.height
    assert union.select(list(COLUMNS)).sort("user_id", "rank").equals(single)  # the same rows, bit for bit
    assert single["is_fallback"].all() != with_model  # the model scores its users; without one, all fall back
    assert min(written) > 0  # every shard scored someone
    per_user = union.group_by("user_id").agg(pl.col("shard").n_unique())
    assert per_user.height == inputs.active_users().len() and (per_user["shard"] == 1).all()
    owner = union.select("user_id", "shard").unique()
    expected = assign_shards(owner["user_id"], shards).map_elements(lambda n: f"{n:02d}-of-04", return_dtype=pl.String)
    assert owner["shard"].equals(expected.alias("shard"))  # each user sits in the shard its hash names


# --- the flow: shard steps, then serving/candidates_staging from the shards, its gate, then publish ----------

PARTITION = (WORLD_AS_OF - dt.timedelta(days=1)).isoformat()
SERVING = [serving.serving_candidates_staging, serving.serving_candidates_staging_gate, serving.serving_candidates,
           serving.serving_candidates_gate]


def _resources(home: Path, database: Path) -> dict[str, object]:
    return {"crossfade": Crossfade(home=str(home)), "warehouse": Warehouse(database=str(database))}


def _run(job: dg.JobDefinition, home: Path, database: Path) -> dg.ExecuteInProcessResult:
    return job.execute_in_process(partition_key=PARTITION, raise_on_error=False,
                                  instance=dg.DagsterInstance.ephemeral(), resources=_resources(home, database))


def _stage_and_publish(home: Path, database: Path, shards: int) -> dg.ExecuteInProcessResult:
    return dg.materialize(SERVING, partition_key=PARTITION, raise_on_error=False, resources=_resources(home, database),
                          run_config={"ops": {"serving__candidates_staging": {"config": {"shards": shards}}}})


def _failures(result: dg.ExecuteInProcessResult) -> list[str]:
    return [event.step_failure_data.user_failure_data.description for event in result.get_step_failure_events()]


def test_the_shards_staged_and_published_are_what_one_process_would_serve(
        ingested_world: IngestedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    store = ingested_world.copy_to(home)
    monkeypatch.setenv("CROSSFADE_EXCHANGE_URI", str(tmp_path / "exchange"))
    scored = _run(candidate_shards_job(3), home, store.database)
    assert scored.success, _failures(scored)
    assert sorted({event.step_key for event in scored.all_events if event.step_key}) == [
        "candidates_shard_00_of_03", "candidates_shard_01_of_03", "candidates_shard_02_of_03"]
    assert not scored.get_asset_materialization_events()  # the job owns no table
    with store.read() as con:
        assert not con.sql("select count(*) from information_schema.tables "
                           "where table_name = 'candidates_staging'").fetchall()[0][0]
    published = _stage_and_publish(home, store.database, 3)
    assert published.success, _failures(published)
    (gate,) = [e for e in published.get_asset_check_evaluations() if e.check_name == "serving_candidates_staging_suite"]
    assert gate.passed
    staged = published.asset_materializations_for_node("serving__candidates_staging")[0].metadata
    settings = load_settings(home=str(home))
    with store.read() as con:
        staging = con.sql("select * exclude (as_of) from serving.candidates_staging order by user_id, rank").pl()
        served = con.sql("select count(*) from serving.candidates where as_of = $as_of",
                         params={"as_of": WORLD_AS_OF}).fetchall()[0][0]
        inputs, _ = serving.serving_inputs(con, settings, WORLD_AS_OF, None)
    single = pl.concat(list(generate(inputs, None, "none"))).sort("user_id", "rank")
    assert staging.select(list(COLUMNS)).equals(single) and served == single.height
    assert (staged["shards"].value, staged["users"].value, staged["model_version"].value) == (
        3, single["user_id"].n_unique(), "none")


def test_an_incomplete_set_of_shards_is_refused_and_keeps_the_staged_rows(
        ingested_world: IngestedWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    store = ingested_world.copy_to(home)
    monkeypatch.delenv("CROSSFADE_EXCHANGE_URI", raising=False)
    result = _run(candidate_shards_job(2), home, store.database)
    assert not result.success and len(_failures(result)) == 2
    assert all("CROSSFADE_EXCHANGE_URI" in text for text in _failures(result))
    uri = tmp_path / "exchange"
    monkeypatch.setenv("CROSSFADE_EXCHANGE_URI", str(uri))
    with store.read() as con:
        inputs, _ = serving.serving_inputs(con, load_settings(home=str(home)), WORLD_AS_OF, None)
    for index in range(3):
        write_shard(uri, inputs, None, "none", index, 3)
    assert _stage_and_publish(home, store.database, 3).success
    with store.read() as con:
        before = con.sql("select count(*) from serving.candidates_staging").fetchall()[0][0]
    assert before > 0
    refused = _stage_and_publish(home, store.database, 4)  # a count other than the shards written
    assert not refused.success and "holds shards of 3 for as_of=" in _failures(refused)[0]
    Path(exchange.shard_uri(str(uri), WORLD_AS_OF, 1, 3)).unlink()  # a shard lost before a reload
    refused = _stage_and_publish(home, store.database, 3)
    assert not refused.success and "missing shards [1] of 3" in _failures(refused)[0]
    assert not refused.asset_materializations_for_node("serving__candidates")  # nothing published
    with store.read() as con:
        assert con.sql("select count(*) from serving.candidates_staging").fetchall()[0][0] == before
