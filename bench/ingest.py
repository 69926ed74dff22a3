"""Benchmark ingestion + feature tables against a plain DuckDB read + GROUP BY of the same landing files."""
from pathlib import Path
import argparse
import datetime as dt
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed

import duckdb  # noqa: E402

from warehouse import features, ingest, landing  # noqa: E402
from warehouse.store import Store  # noqa: E402
from worlds.sample import WorldConfig, simulate  # noqa: E402

END_DATE = dt.date(2026, 1, 31)  # fixed, so a cached world stays valid on later days
ITEM_TYPES = ("music", "podcast", "audiobook")
WORKERS = ("ours", "baseline", "edges", "naive", "store")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--events-per-user-day", type=float, default=1.7)
    parser.add_argument("--events-scale", type=float, default=1.0,
                        help="multiplies users (so events) and keeps per-user activity as it is")
    parser.add_argument("--quick", action="store_true", help="about 1M events: a smoke run in a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="rounds of ours/baseline/edges; medians reported")
    parser.add_argument("--naive-memory-gib", type=float, default=12.0, help="memory limit of the naive self-join")
    parser.add_argument("--naive-timeout-s", type=float, default=300.0)
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-store", action="store_true", help="skip the plain read + copy into a DuckDB table")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out",
                        help="generated landing zones are kept here and reused")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    parser.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--memory-limit", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        workers = {"ours": _ours, "baseline": _baseline, "edges": _edges, "naive": _naive, "store": _store}
        result = workers[args.worker](args)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        result["peak_gib"] = usage.ru_maxrss / 2**20  # KiB on Linux
        result["cpu_s"] = usage.ru_utime + usage.ru_stime  # steadier than wall time beside busy neighbours
        print(json.dumps(result))
        return
    if args.quick:
        args.users = 20_000
    args.users = round(args.users * args.events_scale)
    _compare(args)


def _landing(args: argparse.Namespace) -> tuple[Path, dict]:
    """The cached landing zone for these flags, generated on first use."""
    name = f"world-u{args.users}-d{args.days}-e{args.events_per_user_day:g}-s{args.seed}"
    config = WorldConfig(users=args.users, days=args.days, seed=args.seed, end_date=END_DATE,
                         events_per_user_day=args.events_per_user_day)
    return cached_world(args.cache / name, config)


def cached_world(folder: Path, config: WorldConfig) -> tuple[Path, dict]:
    """The sample world of `config` in `folder`, generated on first use; and its _world.json summary."""
    if not (folder / "_world.json").exists():
        shutil.rmtree(folder, ignore_errors=True)
        print(f"generating {folder.name} in {folder} (once; later runs reuse it)", flush=True)
        started = time.perf_counter()
        simulate(config, folder)
        print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return folder, json.loads((folder / "_world.json").read_text())


def _run(worker: str, args: argparse.Namespace, landing_dir: Path, database: Path, timeout: float | None = None,
         memory_limit: str = "") -> dict:
    """One measurement in a fresh process, so its peak RSS is its own."""
    command = [sys.executable, __file__, f"--worker={worker}", f"--landing={landing_dir}", f"--database={database}",
               f"--memory-limit={memory_limit}"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"failed": f"stopped after {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": last[:160]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compare(args: argparse.Namespace) -> None:
    landing_dir, world = _landing(args)
    rows = world["event_rows"]  # every event row in the files, bad ones included: the same work for both
    print(f"landing zone {landing_dir}: {rows:,} event rows in {world['event_files']} files "
          f"{world['rows_per_format']}, {args.users:,} users, {args.days} days", flush=True)
    rounds: dict[str, list[dict]] = {name: [] for name in ("ours", "baseline", "edges")}
    naive: dict | None = None
    store: dict | None = None
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        for round_no in range(args.repeats):
            database = Path(tmp) / f"round{round_no}" / "crossfade.duckdb"
            # Alternate the order so a neighbour's load drifts over both sides alike.
            order = ("baseline", "ours") if round_no % 2 == 0 else ("ours", "baseline")
            for name in order:
                rounds[name].append(_run(name, args, landing_dir, database))
                _print_run(round_no, name, rounds[name][-1], rows)
            rounds["edges"].append(_run("edges", args, landing_dir, database))
            _print_run(round_no, "edges", rounds["edges"][-1], rows)
            if naive is None and not args.skip_naive:
                naive = _run("naive", args, landing_dir, database, timeout=args.naive_timeout_s,
                             memory_limit=f"{args.naive_memory_gib:g}GiB")
                _print_run(round_no, "naive", naive, rows)
            if store is None and not args.skip_store:
                store = _run("store", args, landing_dir, Path(tmp) / "store.duckdb")
                _print_run(round_no, "store", store, rows)
            if round_no + 1 < args.repeats:
                shutil.rmtree(database.parent)
        _print_table(rounds, naive, store, rows, args)


def _print_run(round_no: int, name: str, run: dict, rows: int) -> None:
    if "failed" in run:
        print(f"  round {round_no + 1} {name:>8}: failed ({run['failed']})", flush=True)
        return
    if name in ("ours", "baseline", "store"):
        rate = f"{rows / run['seconds']:>10,.0f} events/s  (read {run['read']:,} records)"
    else:
        rate = f"{run['edges']:>10,} pairs"
    phases = ", ".join(f"{key} {value:.1f}" for key, value in run.get("phases", {}).items())
    print(f"  round {round_no + 1} {name:>8}: {run['seconds']:7.1f} s  CPU {run['cpu_s']:6.1f} s  "
          f"peak RSS {run['peak_gib']:.2f} GiB  {rate}  {phases}", flush=True)


def _median(runs: list[dict], key: str) -> float:
    good = [run[key] for run in runs if "failed" not in run]
    if not good:
        raise SystemExit(f"every {key} run failed: {runs}")
    return statistics.median(good)


def _print_table(rounds: dict[str, list[dict]], naive: dict | None, store: dict | None, rows: int,
                 args: argparse.Namespace) -> None:
    ours_s, base_s = _median(rounds["ours"], "seconds"), _median(rounds["baseline"], "seconds")
    ours_rate, base_rate = rows / ours_s, rows / base_s
    print(f"\nmedians of {args.repeats} rounds, {rows:,} event rows")
    print(f"{'measure':<64}{'seconds':>9}{'events/s':>12}{'CPU s':>9}{'peak RSS GiB':>14}")

    def line(label: str, runs: list[dict], rate: bool = False) -> None:
        seconds = _median(runs, "seconds")
        speed = f"{rows / seconds:>12,.0f}" if rate else f"{'':>12}"
        print(f"{label:<64}{seconds:>9.1f}{speed}{_median(runs, 'cpu_s'):>9.1f}{_median(runs, 'peak_gib'):>14.2f}")

    line("ours: items, users, every partition, every feature", rounds["ours"], rate=True)
    for phase in rounds["ours"][0].get("phases", {}):
        seconds = statistics.median(run["phases"][phase] for run in rounds["ours"] if "failed" not in run)
        print(f"{'  phase: ' + phase:<64}{seconds:>9.1f}")
    line("baseline: plain DuckDB read + GROUP BY user_id, item_id", rounds["baseline"], rate=True)
    if store is not None:  # the floor under any ingestion that keeps the events in DuckDB
        label = "plain read + typed copy into a DuckDB table, no checks (1 run)"
        if "failed" in store:
            print(f"{label:<64}  failed: {store['failed']}")
        else:
            line(label, [store], rate=True)
    line(f"co-listen edges alone, capped per user ({rounds['edges'][0].get('edges', 0):,} edges)", rounds["edges"])
    if naive is not None:
        label = "naive self-join of events, no cap, not used"
        if "failed" in naive:
            print(f"{label:<64}  failed: {naive['failed']}")
        else:
            line(f"{label} ({naive['edges']:,} pairs, 1 run)", [naive])
    pairs = [(o, b) for o, b in zip(rounds["ours"], rounds["baseline"]) if "failed" not in o and "failed" not in b]
    print("ours/baseline per round, by wall time: " + ", ".join(f"{b['seconds'] / o['seconds']:.3f}" for o, b in pairs)
          + "; by CPU time: " + ", ".join(f"{b['cpu_s'] / o['cpu_s']:.3f}" for o, b in pairs))
    print(f"RESULT ingest ours={ours_rate:.0f} baseline={base_rate:.0f} ratio={ours_rate / base_rate:.3f} unit=events/s")


def ingest_raw(con: duckdb.DuckDBPyConnection, landing_dir: Path) -> tuple[int, dict[str, float]]:
    """Catalogue, users and every arrival partition into raw.*, as the raw assets do.

    Returns the event records read and the seconds of "items+users" and of "events".
    """
    phases: dict[str, float] = {}
    mark = time.perf_counter()
    ingest.ingest_items(con, landing_dir, ITEM_TYPES)
    ingest.ingest_users(con, landing_dir)
    phases["items+users"] = time.perf_counter() - mark
    mark = time.perf_counter()
    partitions = ingest.ingest_event_partitions(con, landing_dir, landing.event_partitions(landing_dir))
    read = sum(result.read for result in partitions.values())
    phases["events"] = time.perf_counter() - mark
    return read, phases


def _ours(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    with Store(args.database).write(stage="bench") as con:  # unpublished, as a stage before its gate
        read, phases = ingest_raw(con, args.landing)
        params = features.FeatureParams(as_of=features.latest_as_of(con))
        for name in features.FEATURE_TABLES:
            phases[name] = features.build_table(con, name, params).seconds
        mark = time.perf_counter()
    phases["checkpoint"] = time.perf_counter() - mark
    return {"seconds": time.perf_counter() - started, "read": read, "phases": phases}


def _plain_scans(landing_dir: Path, columns: tuple[str, ...]) -> tuple[str, dict[str, list[str]]]:
    """One union of DuckDB's own readers over every events file, `columns` as text, broken rows skipped."""
    readers = {
        "jsonl": "read_json_auto(${}, union_by_name = true, ignore_errors = true)",
        "csv": "read_csv_auto(${}, union_by_name = true, ignore_errors = true)",
        "parquet": "read_parquet(${}, union_by_name = true)",
    }
    scans, files = [], {}
    for folder in sorted((landing_dir / "events").iterdir()):
        by_format: dict[str, list[str]] = {}
        for entry in landing.data_files(folder):
            by_format.setdefault(entry.fmt, []).append(str(entry.path))
        for fmt, paths in by_format.items():
            name = f"files{len(files)}"
            files[name] = paths
            values = ", ".join(f"cast({column} as varchar) as {column}" for column in columns)
            scans.append(f"select {values} from {readers[fmt].format(name)}")
    return " union all ".join(scans), files


def _baseline(args: argparse.Namespace) -> dict:
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect()
    # Broken rows are skipped: the plain read does none of the checking and accounting ours does.
    scans, files = _plain_scans(args.landing, ("user_id", "item_id"))
    groups, counted = con.execute(
        f"select count(*), sum(n) from (select user_id, item_id, count(*) as n from ({scans}) group by user_id, item_id)",
        files,
    ).fetchall()[0]
    return {"seconds": time.perf_counter() - started, "groups": groups, "read": counted}


def _store(args: argparse.Namespace) -> dict:
    """What storing the events costs alone: every column read, typed and written to a DuckDB file, no checks."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(str(args.database))
    scans, files = _plain_scans(args.landing, landing.EVENT_COLUMNS)
    con.execute(
        f"""
        create table events as
        select event_id, user_id, item_id, try_cast(ts as timestamptz) as ts, event_type,
               try_cast(ms_played as bigint) as ms_played, context, country
        from ({scans})
        """,
        files,
    )
    con.execute("checkpoint")
    read = con.execute("select count(*) from events").fetchall()[0][0]
    con.close()
    return {"seconds": time.perf_counter() - started, "read": read}


def _edges(args: argparse.Namespace) -> dict:
    """Rebuild features.co_listen_edges alone on the database ours left behind."""
    with Store(args.database).write(stage="bench") as con:  # unpublished, as a stage before its gate
        params = features.FeatureParams(as_of=features.latest_as_of(con))
        built = features.build_table(con, "co_listen_edges", params)
    return {"seconds": built.seconds, "edges": built.rows}


def _naive(args: argparse.Namespace) -> dict:
    """Every pair of graph-type items sharing a listener in the train period, from raw.events, no cap."""
    with Store(args.database).write(stage="bench") as con:  # unpublished, as a stage before its gate
        if args.memory_limit:
            con.execute(f"set memory_limit = '{args.memory_limit}'")
        params = features.FeatureParams(as_of=features.latest_as_of(con))
        started = time.perf_counter()
        con.execute(
            """
            create or replace table features._naive_co_listen_pairs as
            with train as (
                select e.user_id, e.item_id
                from raw.events as e
                inner join features.splits as s on s.split = 'train' and e.ts >= s.start_at and e.ts < s.end_at
                inner join raw.items as i on e.item_id = i.item_id and list_contains($graph_types::varchar[], i.item_type)
            )
            select a.item_id as src_item_id, b.item_id as dst_item_id, count(distinct a.user_id) as co_listeners
            from train as a inner join train as b on a.user_id = b.user_id and a.item_id < b.item_id
            group by a.item_id, b.item_id
            """,
            {"graph_types": list(params.graph_types)},
        )
        seconds = time.perf_counter() - started
        pairs = con.execute("select count(*) from features._naive_co_listen_pairs").fetchall()[0][0]
        con.execute("drop table features._naive_co_listen_pairs")
    return {"seconds": seconds, "edges": pairs}


if __name__ == "__main__":
    main()
