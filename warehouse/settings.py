"""Settings: CROSSFADE_HOME, its optional crossfade.yaml and CROSSFADE_* environment variables."""
from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from warehouse.exchange import check_uri

KNOWN_ITEM_TYPES = ("music", "podcast", "audiobook")
EVENT_TYPES = ("play", "skip", "save", "follow", "purchase", "preview")  # the landing contract's event types
ENV_PREFIX = "CROSSFADE_"
LIST_KEYS = ("item_types", "graph_types")
EXECUTORS = ("multiprocess", "in_process", "k8s")


class SettingsError(ValueError):
    """A configuration value is wrong; the message names the key and what is allowed."""


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path = Path(".crossfade")
    item_types: tuple[str, ...] = KNOWN_ITEM_TYPES
    graph_types: tuple[str, ...] = ("podcast", "audiobook")  # the paper keeps music out of the graph
    target_type: str = "audiobook"
    window_days: int = 90
    holdout_days: int = 14  # the last days before as_of: scored once per run, never used to choose
    valid_days: int = 14  # the days before the holdout: early stopping, tuning, the promotion gate and the serving plan
    as_of: dt.date | None = None  # None: the day after the newest landed event partition
    k: int = 100
    partitions_start: dt.date = dt.date(2025, 1, 1)  # first day the UI offers as an events partition
    min_co_listeners: int = 1  # the paper joins two items when one user consumed both
    max_items_per_user: int = 50  # caps a heavy user's items in the co-listen self-join
    max_reject_rate: float = 0.05
    max_quarantined_files: int = 1000  # unreadable files per arrival partition; past it the raw gate stops the night
    volume_tolerance: float = 0.5  # a partition may differ from the trailing median by this share
    min_catalog_coverage: float = 0.05
    promotion_tolerance: float = 0.10  # relative drop in cold HR@10 against the promoted model the gate accepts
    llm_backend: str = "local"  # local (bundled SmolLM2) or http (any OpenAI-compatible endpoint)
    llm_base_url: str = ""
    llm_model: str = ""
    llm_api_key_env: str = "CROSSFADE_LLM_API_KEY"  # the variable's name; its value is never logged
    llm_response_format: str = "json_schema"  # json_object for servers without json_schema (llama_cpp.server)
    llm_timeout_s: float = 60.0
    llm_max_concurrency: int = 4
    llm_threads: int = 1  # llama.cpp threads for the local model; spinning threads hurt on a busy 2-core host
    llm_call_budget: int = 24  # LLM calls per enrichment asset per run; what is left waits for the next run
    llm_time_budget_s: float = 0.0  # seconds of LLM calls per enrichment asset per run, as well (0 = no limit)
    llm_max_failure_rate: float = 0.2
    # User profile texts MiniLM encodes per run (about 74 a second on 2 CPU cores): users without a vector
    # first, then the longest-stale; the rest keep their previous vector until a later run. Items are all encoded.
    embed_user_budget: int = 20_000
    judge_users: int = 20
    # The judge's nightly validation panel: seeded users with holdout targets, one holdout item and one
    # unconsumed released item each, judged pointwise by the LLM and by sBERT-Sim (MiniLM cosine).
    judge_panel_users: int = 60
    # sBERT-Sim costs no LLM call, so the reference judge is also scored on a larger seeded panel (the LLM's
    # panel is drawn from it): its AUC then has a usable interval on the demo's few thousand users.
    judge_reference_users: int = 1000
    # Pairwise validation: per compared pair, seeded users whose two lists hold different numbers of held-out
    # items, judged in both orders every night (every judgement is decided: agreement is measured each night).
    judge_pairwise_panel_users: int = 5  # 0 = no pairwise panel
    # An LLM output kind is used downstream (embedding text, tower features, the judge's profile) only when
    # its measured quality passes these floors; otherwise the floor's value (taxonomy topics, template profile).
    llm_min_topic_accuracy: float = 0.6  # share of LLM topics matching the taxonomy where it is unambiguous
    llm_min_profile_faithfulness: float = 0.6  # share of narrative interests found in the user's facts
    llm_min_json_validity: float = 0.9  # share of answers that parsed against the JSON schema
    # Users with holdout targets that offline evaluation scores per run, a seeded sample (0 = all).
    eval_max_users: int = 100_000
    # The two-tower ablations eval scores beside the served models (the two-tower without HGNN, 2T-HGNN without
    # LLM features): each is a two-tower fit, the night's largest step at scale. Off: every other model only.
    eval_ablations: bool = True
    # Days the settings a night's validation grids chose stand for (0 = the grids run every night): on the
    # nights between, validation scores each model at those settings only (README, "Evaluation protocol").
    retune_days: int = 7
    seed: int = 0
    executor: str = "multiprocess"  # in_process, or k8s: each step a Kubernetes Job (deploy/k8s)
    exchange_uri: str = ""  # Parquet exchange of sharded steps: a directory, file://, s3://, gs:// or az://; "" = off
    # Warehouse snapshots older than this are expired after each run (time travel reaches this far back); a
    # snapshot readers still see (a table whose later gates failed) is kept however old.
    snapshot_retention_days: int = 7

    @field_validator("item_types", "graph_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(value) - set(KNOWN_ITEM_TYPES))
        if unknown or not value:
            raise ValueError(f"must be a non-empty list from {list(KNOWN_ITEM_TYPES)} (got {list(value)})")
        return tuple(value)

    @field_validator("window_days", "holdout_days", "valid_days", "k", "min_co_listeners", "max_items_per_user", "llm_call_budget",
                     "llm_max_concurrency", "llm_threads", "judge_users", "judge_panel_users", "judge_reference_users",
                     "embed_user_budget", "snapshot_retention_days")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"must be a positive integer (got {value})")
        return value

    @field_validator("max_quarantined_files", "llm_time_budget_s", "judge_pairwise_panel_users", "retune_days")
    @classmethod
    def _not_below_zero(cls, value: float) -> float:
        if value < 0:
            raise ValueError(f"must be 0 or more (got {value})")
        return value

    @field_validator("eval_max_users")
    @classmethod
    def _not_negative(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"must be 0 (no limit) or a positive integer (got {value})")
        return value

    @field_validator("max_reject_rate", "volume_tolerance", "min_catalog_coverage", "llm_max_failure_rate",
                     "promotion_tolerance", "llm_min_topic_accuracy", "llm_min_profile_faithfulness",
                     "llm_min_json_validity")
    @classmethod
    def _share(cls, value: float) -> float:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"must be between 0 and 1 (got {value})")
        return value

    @field_validator("llm_response_format")
    @classmethod
    def _response_format(cls, value: str) -> str:
        if value not in ("json_schema", "json_object"):
            raise ValueError(f"must be one of ['json_schema', 'json_object'] (got '{value}')")
        return value

    @field_validator("llm_backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value not in ("local", "http"):
            raise ValueError(f"must be one of ['local', 'http'] (got '{value}')")
        return value

    @field_validator("executor")
    @classmethod
    def _executor(cls, value: str) -> str:
        if value not in EXECUTORS:
            raise ValueError(f"must be one of {list(EXECUTORS)} (got '{value}')")
        return value

    @field_validator("exchange_uri")
    @classmethod
    def _exchange_uri(cls, value: str) -> str:
        return check_uri(value)  # the exchange module owns what DuckDB can write and list

    @model_validator(mode="after")
    def _types_agree(self) -> Settings:
        if self.target_type not in self.item_types:
            raise ValueError(f"target_type must be one of item_types {list(self.item_types)} (got '{self.target_type}')")
        if not set(self.graph_types) <= set(self.item_types):
            raise ValueError(f"graph_types {list(self.graph_types)} must be a subset of item_types {list(self.item_types)}")
        if self.llm_backend == "http" and not (self.llm_base_url and self.llm_model):
            raise ValueError("llm_backend 'http' needs llm_base_url and llm_model")
        return self

    @property
    def landing(self) -> Path:
        return self.home / "landing"

    @property
    def warehouse_dir(self) -> Path:
        return self.home / "warehouse"

    @property
    def database(self) -> Path:
        return self.warehouse_dir / "crossfade.duckdb"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    def model_dir(self, model_version: str) -> Path:
        """Where a model version's checkpoint files live."""
        return self.home / "models" / model_version

    def llm_api_key(self) -> str | None:
        return os.environ.get(self.llm_api_key_env) or None


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in Settings.model_fields:
        raw = environ.get(ENV_PREFIX + name.upper())
        if raw is None or name == "home":
            continue
        values[name] = [part.strip() for part in raw.split(",") if part.strip()] if name in LIST_KEYS else raw
    return values


def load_settings(environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    """Settings from CROSSFADE_HOME/crossfade.yaml, then CROSSFADE_* variables, then overrides."""
    environ = dict(os.environ if environ is None else environ)
    home = Path(overrides.pop("home", None) or environ.get("CROSSFADE_HOME") or ".crossfade").absolute()
    values: dict[str, Any] = {}
    config_file = home / "crossfade.yaml"
    if config_file.exists():
        try:
            loaded = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as error:
            raise SettingsError(f"{config_file}: not valid YAML ({error})") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"{config_file}: expected a mapping of key: value (got {type(loaded).__name__})")
        values.update(loaded)
    values.update(_from_env(environ))
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return Settings(home=home, **values)
    except ValidationError as error:
        raise SettingsError(_explain(error, config_file)) from None


def _explain(error: ValidationError, config_file: Path) -> str:
    lines = [f"invalid crossfade configuration ({config_file} or {ENV_PREFIX}* variables):"]
    for issue in error.errors():
        key = ".".join(str(part) for part in issue["loc"]) or "settings"
        message = issue["msg"].removeprefix("Value error, ")
        if issue["type"] == "extra_forbidden":
            message = f"unknown key; allowed keys are {sorted(Settings.model_fields)}"
        lines.append(f"  {key}: {message}")
    return "\n".join(lines)
