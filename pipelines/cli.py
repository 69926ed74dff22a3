"""The `crossfade` command: simulate a sample world, run the nightly chain, query published tables."""
from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import yaml

from warehouse.settings import SettingsError, load_settings

STAGES = ("raw", "features", "enrich", "models", "serving", "eval")


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD (got {text!r})") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossfade", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write a sample world's landing zone")
    simulate.add_argument("--users", type=int, default=2000)
    simulate.add_argument("--days", type=int, default=120)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--out", type=Path, required=True, help="landing folder to write (e.g. $CROSSFADE_HOME/landing)")
    simulate.add_argument("--end-date", type=_date, default=None, help="last simulated day (default: yesterday, UTC)")
    simulate.add_argument("--dirty-rate", type=float, default=0.01, help="share of event rows made bad")
    simulate.add_argument("--events-per-user-day", type=float, default=1.5)
    simulate.add_argument("--replace", action="store_true", help="overwrite a world already written to --out")
    simulate.add_argument("--conversion-days", type=int, default=None,
                          help="last days in which cold users try their first audiobooks (default: 28, the "
                               "validation and holdout periods, or half of --days when that is shorter)")

    run = commands.add_parser("run", help="run the nightly chain (or part of it) on CROSSFADE_HOME")
    run.add_argument("--as-of", type=_date, default=None, help="use only events strictly before this date")
    run.add_argument("--select", choices=STAGES, action="append", default=None,
                     help="run only these stages (repeatable); default: all")
    run.add_argument("--run-config", type=Path, default=None,
                     help="YAML with the `ops:` part of a Dagster run config for the refresh, e.g. "
                          "'ops: {models__two_tower: {config: {epochs: 4}}}'")

    sql = commands.add_parser("sql", help="query the last published snapshot (never blocked by a running write)")
    sql.add_argument("query")
    sql.add_argument("--format", choices=("table", "csv", "json"), default="table")
    sql.add_argument("--max-rows", type=int, default=50)

    commands.add_parser("dagster-home", help="prepare and print the DAGSTER_HOME used by `crossfade run` and `make ui`")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "simulate":
            return _simulate(args)
        if args.command == "sql":
            return _sql(args)
        if args.command == "dagster-home":
            from pipelines.runner import prepare_dagster_home

            print(prepare_dagster_home(load_settings()))
            return 0
        from pipelines.runner import run_nightly

        return run_nightly(load_settings(as_of=args.as_of), stages=tuple(args.select or STAGES),
                           ops=_run_config_ops(args.run_config))
    except SettingsError as error:  # a run config error is one too
        print(f"crossfade: {error}", file=sys.stderr)
        return 2


def _run_config_ops(path: Path | None) -> dict:
    """The `ops` mapping of a run-config YAML file (nothing else is taken from it)."""
    from pipelines.runner import RunConfigError

    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise RunConfigError(f"--run-config {path}: cannot be read as YAML ({error})") from None
    if not isinstance(loaded, dict) or set(loaded) - {"ops"} or not isinstance(loaded.get("ops", {}), dict):
        raise RunConfigError(f"--run-config {path}: expected a mapping with one key, ops: {{<op>: {{config: ...}}}} "
                             f"(got keys {sorted(loaded) if isinstance(loaded, dict) else type(loaded).__name__})")
    return loaded.get("ops", {})


def _simulate(args: argparse.Namespace) -> int:
    from worlds.sample import WorldConfig, simulate

    conversion_days = args.conversion_days or min(WorldConfig.holdout_days, max(1, args.days // 2))
    config = WorldConfig(
        users=args.users, days=args.days, seed=args.seed, end_date=args.end_date,
        dirty_rate=args.dirty_rate, events_per_user_day=args.events_per_user_day, holdout_days=conversion_days,
    )
    try:
        summary = simulate(config, args.out, replace=args.replace)
    except FileExistsError as error:
        print(f"crossfade simulate: {error} (pass --replace to overwrite it)", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"crossfade simulate: {error}", file=sys.stderr)
        return 2
    print(f"wrote a sample world to {args.out}:")
    print(summary.to_json(), end="")
    return 0


def _sql(args: argparse.Namespace) -> int:
    import duckdb
    import polars as pl

    from warehouse.store import NothingPublishedError, Store

    settings = load_settings()
    store = Store(settings.database)
    try:
        with store.read() as con:
            frame = con.execute(args.query).pl()
    except NothingPublishedError as error:
        print(f"crossfade sql: {error}", file=sys.stderr)
        return 1
    except duckdb.Error as error:
        print(f"crossfade sql: {error}", file=sys.stderr)
        pending = store.pending_stages()
        if isinstance(error, duckdb.CatalogException) and pending:
            print(f"crossfade sql: readers see each table as its gate last published it; not published yet: "
                  f"{', '.join(sorted(pending))} (their gates failed or have not run)", file=sys.stderr)
        return 1
    if args.format == "csv":
        sys.stdout.write(frame.write_csv())
    elif args.format == "json":
        sys.stdout.write(frame.write_ndjson())
    else:
        with pl.Config(tbl_rows=args.max_rows, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=os.get_terminal_size(0).columns if sys.stdout.isatty() else 200):
            print(frame)
    return 0


if __name__ == "__main__":
    sys.exit(main())
