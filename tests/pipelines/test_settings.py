"""Settings: defaults, crossfade.yaml, CROSSFADE_* variables, and errors that name the key and what is allowed."""
from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from warehouse.settings import KNOWN_ITEM_TYPES, SettingsError, load_settings


def test_defaults_follow_the_design(crossfade_home: Path) -> None:
    settings = load_settings()
    assert settings.home == crossfade_home
    assert (settings.item_types, settings.graph_types, settings.target_type) == (KNOWN_ITEM_TYPES, ("podcast", "audiobook"), "audiobook")
    assert (settings.window_days, settings.holdout_days, settings.as_of, settings.k) == (90, 14, None, 100)
    assert settings.landing == crossfade_home / "landing"
    assert settings.database == crossfade_home / "warehouse" / "crossfade.duckdb"
    assert settings.dagster_home == crossfade_home / "dagster"


def test_home_defaults_to_dot_crossfade_in_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).home == tmp_path / ".crossfade"


def test_yaml_then_environment_then_overrides(crossfade_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (crossfade_home / "crossfade.yaml").write_text(
        "target_type: podcast\nwindow_days: 30\nholdout_days: 7\nas_of: 2026-11-02\nitem_types: [podcast, audiobook]\nk: 20\n"
    )
    settings = load_settings()
    assert (settings.target_type, settings.window_days, settings.holdout_days) == ("podcast", 30, 7)
    assert (settings.as_of, settings.item_types, settings.k) == (dt.date(2026, 11, 2), ("podcast", "audiobook"), 20)
    monkeypatch.setenv("CROSSFADE_WINDOW_DAYS", "60")
    monkeypatch.setenv("CROSSFADE_GRAPH_TYPES", "podcast, audiobook,")
    settings = load_settings()
    assert (settings.window_days, settings.holdout_days, settings.graph_types) == (60, 7, ("podcast", "audiobook"))
    assert load_settings(window_days=10, as_of=None).window_days == 10  # None leaves the value alone
    assert load_settings(as_of=None).as_of == dt.date(2026, 11, 2)


def test_an_explicit_environment_is_used_instead_of_the_process_one(tmp_path: Path) -> None:
    settings = load_settings(environ={"CROSSFADE_HOME": str(tmp_path), "CROSSFADE_K": "7"})
    assert (settings.home, settings.k) == (tmp_path, 7)


CONFIG_ERRORS = [
    ("colour: blue\n", ["colour", "unknown key", "target_type", "window_days"]),
    ("target_type: video\n", ["target_type", "['music', 'podcast', 'audiobook']", "'video'"]),
    ("item_types: [music, podcast]\ngraph_types: [podcast]\n", ["target_type", "item_types ['music', 'podcast']", "'audiobook'"]),
    ("item_types: [music, video]\n", ["item_types", "['music', 'podcast', 'audiobook']", "'video'"]),
    ("graph_types: [podcast, audiobook]\nitem_types: [audiobook, music]\n", ["graph_types", "subset of item_types"]),
    ("window_days: -5\n", ["window_days", "positive integer", "-5"]),
    ("holdout_days: 0\n", ["holdout_days", "positive integer", "0"]),
    ("eval_max_users: -1\n", ["eval_max_users", "0 (no limit) or a positive integer", "-1"]),
    ("window_days: ninety\n", ["window_days", "integer"]),
    ("max_reject_rate: 1.5\n", ["max_reject_rate", "between 0 and 1", "1.5"]),
    ("llm_backend: cloud\n", ["llm_backend", "['local', 'http']", "'cloud'"]),
    ("llm_backend: http\n", ["llm_base_url", "llm_model"]),
    ("as_of: tomorrow\n", ["as_of", "date"]),
    ("- a list\n- not a mapping\n", ["crossfade.yaml", "mapping", "list"]),
    ("executor: spark\n", ["executor", "['multiprocess', 'in_process', 'k8s']", "'spark'"]),
    ("exchange_uri: https://cdn.example.com/x\n", ["exchange_uri", "s3://, gs:// or az://", "cannot write or list",
                                                   "'https://cdn.example.com/x'"]),
    ("exchange_uri: ftp://host/x\n", ["exchange_uri", "a local directory", "'ftp://host/x'"]),
    ("exchange_uri: s3://\n", ["exchange_uri", "needs a bucket"]),
]


@pytest.mark.parametrize(("text", "expected"), CONFIG_ERRORS, ids=[text.split(":")[0].strip("- \n") for text, _ in CONFIG_ERRORS])
def test_configuration_errors_name_the_key_and_allowed_values(crossfade_home: Path, text: str, expected: list[str]) -> None:
    (crossfade_home / "crossfade.yaml").write_text(text)
    with pytest.raises(SettingsError) as error:
        load_settings()
    for fragment in expected:
        assert fragment in str(error.value)


def test_environment_errors_name_the_key(crossfade_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFADE_HOLDOUT_DAYS", "-1")
    with pytest.raises(SettingsError, match=r"holdout_days: must be a positive integer \(got -1\)"):
        load_settings()


def test_unparseable_yaml_is_a_settings_error(crossfade_home: Path) -> None:
    (crossfade_home / "crossfade.yaml").write_text("window_days: [90\n")
    with pytest.raises(SettingsError, match="crossfade.yaml"):
        load_settings()


@pytest.mark.parametrize("argv", [["run"], ["sql", "select 1"], ["dagster-home"]])
def test_cli_exits_2_with_the_message(crossfade_home: Path, capsys: pytest.CaptureFixture, argv: list[str]) -> None:
    (crossfade_home / "crossfade.yaml").write_text("target_type: video\n")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("crossfade: invalid crossfade configuration")
    assert "target_type" in err and "['music', 'podcast', 'audiobook']" in err


def test_the_command_line_exits_2_without_a_traceback(crossfade_home: Path) -> None:
    (crossfade_home / "crossfade.yaml").write_text("window_days: -3\n")
    done = subprocess.run([sys.executable, "-m", "pipelines.cli", "sql", "select 1"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "window_days: must be a positive integer (got -3)" in done.stderr
    assert "Traceback" not in done.stderr


def test_executor_and_exchange_uri_default_off_and_come_from_the_environment(crossfade_home: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings()
    assert (settings.executor, settings.exchange_uri) == ("multiprocess", "")
    monkeypatch.setenv("CROSSFADE_EXECUTOR", "k8s")
    monkeypatch.setenv("CROSSFADE_EXCHANGE_URI", "s3://crossfade-prod/exchange/")
    settings = load_settings()
    assert (settings.executor, settings.exchange_uri) == ("k8s", "s3://crossfade-prod/exchange")
    (crossfade_home / "crossfade.yaml").write_text("exchange_uri: file:///srv/exchange\n")
    monkeypatch.delenv("CROSSFADE_EXCHANGE_URI")
    assert load_settings().exchange_uri == "/srv/exchange"
    assert load_settings(environ={"CROSSFADE_EXCHANGE_URI": "exchange"}).exchange_uri == str(Path("exchange").absolute())


def test_a_bad_executor_variable_names_the_key(crossfade_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSFADE_EXECUTOR", "kubernetes")
    with pytest.raises(SettingsError, match=r"executor: must be one of \['multiprocess', 'in_process', 'k8s'\] "
                                            r"\(got 'kubernetes'\)"):
        load_settings()


def test_eval_ablations_default_on_and_turn_off_from_the_environment(crossfade_home: Path) -> None:
    from models.evaluate import LLM_ABLATION, MODELS, evaluated_models

    assert load_settings().eval_ablations is True
    off = load_settings(environ={"CROSSFADE_EVAL_ABLATIONS": "false"})
    assert off.eval_ablations is False
    assert evaluated_models(True) == (*MODELS, LLM_ABLATION)
    assert set(evaluated_models(off.eval_ablations)) == set(MODELS) - {"two_tower"}
    with pytest.raises(SettingsError, match="eval_ablations"):
        load_settings(environ={"CROSSFADE_EVAL_ABLATIONS": "sometimes"})
