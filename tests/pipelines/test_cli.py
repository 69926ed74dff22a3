"""The `crossfade` command: simulate, sql (never blocked by a write), dagster-home, and run end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines.cli import main


def crossfade(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """The command line in a separate process, with this process's environment (CROSSFADE_HOME included)."""
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ.copy())


@pytest.fixture
def published_home(ingested_world, crossfade_home: Path) -> Path:
    """CROSSFADE_HOME holding a copy of the ingested sample world."""
    ingested_world.copy_to(crossfade_home)
    return crossfade_home


def test_simulate_writes_a_landing_zone(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "landing"
    assert main(["simulate", "--users", "40", "--days", "20", "--seed", "3", "--out", str(out), "--end-date", "2026-11-01"]) == 0
    partitions = sorted(path.name for path in (out / "events").iterdir())
    assert partitions[0] == "date=2026-10-13" and partitions[-1] == "date=2026-11-01" and len(partitions) == 20
    assert (out / "items").is_dir() and (out / "users").is_dir()
    written = json.loads((out / "_world.json").read_text())
    assert written["users"] == 40
    assert str(out) in capsys.readouterr().out


def test_simulate_refuses_an_impossible_world_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["simulate", "--users", "40", "--days", "6", "--out", str(tmp_path / "landing")]) == 2
    assert "must be in [1, days]" in capsys.readouterr().err


@pytest.mark.parametrize(("fmt", "expected"), [("csv", "n,types\n13696,6\n"), ("json", '{"n":13696,"types":6}\n')])
def test_sql_answers_from_the_published_snapshot(published_home: Path, capsys, ingested_world, fmt: str, expected: str) -> None:
    assert ingested_world.summary.clean_events == 13696  # the fixed world this test's answer is written for
    query = "select count(*) as n, count(distinct event_type) as types from raw.events"
    assert main(["sql", query, "--format", fmt]) == 0
    assert capsys.readouterr().out == expected


def test_sql_prints_a_table_by_default(published_home: Path, capsys) -> None:
    assert main(["sql", "select relation, count(*) as edges from features.co_listen_edges group by 1 order by 1"]) == 0
    out = capsys.readouterr().out
    assert "audiobook__podcast" in out and "edges" in out


def test_sql_before_anything_is_published_says_what_to_run(crossfade_home: Path, capsys) -> None:
    assert main(["sql", "select 1"]) == 1
    assert "crossfade run" in capsys.readouterr().err


def test_sql_errors_are_reported_without_a_traceback(published_home: Path, capsys) -> None:
    assert main(["sql", "select * from raw.nothing_here"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("crossfade sql:") and "nothing_here" in err


def test_sql_cannot_write(published_home: Path, capsys) -> None:
    assert main(["sql", "delete from raw.events"]) == 1
    assert "read-only" in capsys.readouterr().err


def test_sql_answers_while_another_process_holds_the_write_lock(published_home: Path, writer_process) -> None:
    database = published_home / "warehouse" / "crossfade.duckdb"
    with writer_process(database) as writer:
        started = time.monotonic()
        done = crossfade("sql", "select (select count(*) from raw.events) as n, "
                         "(select count(*) from duckdb_tables() where table_name = 'written_meanwhile') as meanwhile",
                         "--format", "csv")
        elapsed = time.monotonic() - started
        assert writer.poll() is None  # still writing while the query ran
        assert (done.returncode, done.stdout, done.stderr) == (0, "n,meanwhile\n13696,0\n", "")
        assert elapsed < 60
        writer.communicate("go\n", timeout=60)
    done = crossfade("sql", "select answer from main.written_meanwhile", "--format", "csv")
    assert (done.returncode, done.stdout) == (0, "answer\n42\n")


def test_dagster_home_is_prepared_inside_crossfade_home(crossfade_home: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME")
    assert main(["dagster-home"]) == 0
    home = Path(capsys.readouterr().out.strip())
    assert home == crossfade_home / "dagster"
    assert "max_concurrent_runs: 1" in (home / "dagster.yaml").read_text()


def test_run_without_events_says_how_to_land_them(crossfade_home: Path, capsys) -> None:
    assert main(["run"]) == 1
    assert "crossfade simulate" in capsys.readouterr().err


@pytest.mark.slow
def test_run_ingests_and_builds_features_then_has_nothing_left_to_ingest(crossfade_home: Path, capsys,
                                                                         monkeypatch) -> None:
    for name in ("CROSSFADE_HOLDOUT_DAYS", "CROSSFADE_VALID_DAYS"):  # 20 days hold train, validation and holdout
        monkeypatch.setenv(name, "5")
    landing = crossfade_home / "landing"
    assert main(["simulate", "--users", "60", "--days", "20", "--seed", "5", "--out", str(landing), "--end-date", "2026-11-01"]) == 0
    summary = json.loads((landing / "_world.json").read_text())
    capsys.readouterr()
    assert main(["run", "--select", "raw", "--select", "features"]) == 0
    out = capsys.readouterr().out
    assert "as-of 2026-11-02" in out and "20 new or changed arrival partitions" in out
    assert main(["sql", "select (select count(*) from raw.events) as events, (select count(*) from features.user_stats) as users, "
                 "(select count(*) from features.co_listen_edges) > 0 as has_edges", "--format", "csv"]) == 0
    assert capsys.readouterr().out == f"events,users,has_edges\n{summary['clean_events']},{summary['users']},true\n"
    assert main(["run", "--select", "raw"]) == 0
    assert "every arrival partition is up to date" in capsys.readouterr().out


@pytest.mark.slow
def test_run_as_of_builds_features_from_events_strictly_before_that_date(crossfade_home: Path, capsys,
                                                                       monkeypatch) -> None:
    for name in ("CROSSFADE_HOLDOUT_DAYS", "CROSSFADE_VALID_DAYS"):  # the world's 12 days before the as-of date
        monkeypatch.setenv(name, "4")                                 # hold the three periods
    landing = crossfade_home / "landing"
    assert main(["simulate", "--users", "60", "--days", "20", "--seed", "5", "--out", str(landing), "--end-date", "2026-11-01"]) == 0
    assert main(["run", "--select", "raw"]) == 0  # the warehouse holds every landed day, later ones included
    capsys.readouterr()
    assert main(["run", "--as-of", "2026-10-25", "--select", "raw", "--select", "features"]) == 0
    assert "as-of 2026-10-25" in capsys.readouterr().out
    assert main(["sql", "select (select count(*) from raw.events where ts >= '2026-10-25') > 0 as later_events_landed, "
                 "(select max(last_seen_at) from features.interactions) < '2026-10-25' as features_before, "
                 "(select max(end_at) from features.splits) <= '2026-10-25' as splits_before", "--format", "csv"]) == 0
    assert capsys.readouterr().out == "later_events_landed,features_before,splits_before\ntrue,true,true\n"


@pytest.mark.parametrize(("text", "says"), [
    ("ops: [1, 2", "cannot be read as YAML"),
    ("resources: {}\n", "expected a mapping with one key, ops"),
    ("ops: {models__three_tower: {config: {epochs: 1}}}\n", "ops ['models__three_tower'] that do not exist"),
])
def test_run_refuses_a_run_config_it_cannot_use_with_exit_2(crossfade_home: Path, capsys, text: str,
                                                             says: str) -> None:
    landing = crossfade_home / "landing"
    assert main(["simulate", "--users", "40", "--days", "20", "--seed", "3", "--out", str(landing),
                 "--end-date", "2026-11-01"]) == 0
    config = crossfade_home / "run.yaml"
    config.write_text(text)
    capsys.readouterr()
    assert main(["run", "--select", "features", "--run-config", str(config)]) == 2
    assert says in capsys.readouterr().err


def test_a_run_config_reaches_only_the_selected_ops() -> None:
    from pipelines.runner import ops_for_selection

    keys = [dg.AssetKey(["features", "splits"]), dg.AssetKey(["models", "two_tower"])]
    ops = {"models__two_tower": {"config": {"epochs": 2}}, "models__hgnn_item_embeddings": {"config": {"max_epochs": 1}}}
    known = {"features__splits", "models__two_tower", "models__hgnn_item_embeddings"}
    assert ops_for_selection(keys, ops, known) == {"models__two_tower": {"config": {"epochs": 2}}}
