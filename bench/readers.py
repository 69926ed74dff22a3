"""Concurrent readers: processes querying the published state in a loop while `crossfade run` writes."""
from pathlib import Path
import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed

END_DATE = dt.date(2026, 11, 1)
# What one reader asks of one snapshot: the same questions `crossfade sql` users ask, plus the
# invariants a complete snapshot satisfies (rows and their ingestion log are written in one transaction).
QUERIES = {
    "events": "select count(*) from raw.events",
    "rejected": "select count(*) from raw.rejected_events",
    "logged": """
        select coalesce(sum(c.count_accepted), 0), coalesce(sum(c.count_rejected), 0), count(*)
        from (select arg_max(struct_pack(count_accepted, count_rejected), ingested_at) as c
              from raw.ingest_log group by arrival_date)
    """,
    "per_day_mismatch": """
        select count(*) from (
            select arrival_date, count(*) as n from raw.events group by 1
        ) as e full join (
            select arrival_date, arg_max(count_accepted, ingested_at) as n from raw.ingest_log group by 1
        ) as l using (arrival_date)
        where coalesce(e.n, 0) <> coalesce(l.n, 0)
    """,
    "tables": "select count(*) from duckdb_tables() where schema_name in ('raw', 'features')",
    "users": "select count(*) from raw.users",
}
FEATURE_QUERY = "select count(*) from features.splits"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--readers", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="baseline: the same readers with no writer")
    parser.add_argument("--max-seconds", type=float, default=900.0, help="stop the readers after this long whatever happens")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--stop-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _reader(args.database, args.stop_file, args.max_seconds, args.out)
        return
    figures = _measure(args)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    ok = figures["errors"] == 0 and figures["inconsistent"] == 0
    print(f"RESULT readers ours={figures['queries_per_s']:.1f} baseline={figures['idle_queries_per_s']:.1f} "
          f"ratio={figures['queries_per_s'] / figures['idle_queries_per_s']:.3f} unit=queries/s")
    sys.exit(0 if ok else 1)


def _reader(database: Path, stop_file: Path, max_seconds: float, out: Path) -> None:
    """Query the published state until told to stop; record every error and every answer per published snapshot."""
    from warehouse.store import Store

    store = Store(database)
    answers: dict[str, list] = {}
    errors: list[str] = []
    inconsistent: list[str] = []
    queries = rounds = 0
    started = time.perf_counter()
    previous_events = -1
    while not stop_file.exists() and time.perf_counter() - started < max_seconds:
        try:
            state = store.state_path.read_text()
            with store.read() as con:
                answer = {name: con.execute(sql).fetchall()[0] for name, sql in QUERIES.items()}
                has_features = con.execute(
                    "select count(*) from duckdb_tables() where schema_name = 'features' and table_name = 'splits'"
                ).fetchall()[0][0]
                answer["splits"] = con.execute(FEATURE_QUERY).fetchall()[0] if has_features else (None,)
        except Exception as error:  # every failure is a finding: counted, with its text
            errors.append(f"{type(error).__name__}: {error}"[:300])
            continue
        # the published state read names the answer (a publish in between leaves the answer unnamed)
        snapshot = str(hash(state)) if store.state_path.read_text() == state else None
        queries += len(answer) + 2
        rounds += 1
        flat = [list(value) for value in answer.values()]
        problem = _inconsistency(answer)
        if snapshot is not None and snapshot in answers and answers[snapshot] != flat:
            problem = f"snapshot {snapshot} answered differently on two reads"
        if answer["events"][0] < previous_events:
            problem = f"went back in time: {answer['events'][0]} events after {previous_events}"
        if problem:
            inconsistent.append(problem)
        previous_events = answer["events"][0]
        if snapshot is not None:
            answers[snapshot] = flat
    out.write_text(json.dumps({
        "queries": queries, "rounds": rounds, "seconds": time.perf_counter() - started, "errors": errors,
        "inconsistent": inconsistent, "snapshots": len(answers),
    }))


def _inconsistency(answer: dict) -> str:
    accepted, rejected, _ = answer["logged"]
    if answer["events"][0] != accepted or answer["rejected"][0] != rejected:
        return f"rows {answer['events'][0]}/{answer['rejected'][0]} but log says {accepted}/{rejected}"
    if answer["per_day_mismatch"][0]:
        return f"{answer['per_day_mismatch'][0]} arrival days differ from their log"
    if answer["splits"][0] not in (None, 3):  # train, valid, holdout
        return f"features.splits has {answer['splits'][0]} rows"
    return ""


def _readers(database: Path, count: int, work: Path, label: str, max_seconds: float) -> tuple[Path, list]:
    stop = work / f"stop-{label}"
    processes = [
        (subprocess.Popen([sys.executable, __file__, "--worker", f"--database={database}", f"--stop-file={stop}",
                           f"--out={work / f'{label}-{n}.json'}", f"--max-seconds={max_seconds}"]),
         work / f"{label}-{n}.json")
        for n in range(count)
    ]
    return stop, processes


def _collect(stop: Path, processes: list) -> dict:
    stop.touch()
    totals = {"queries": 0, "rounds": 0, "seconds": 0.0, "errors": [], "inconsistent": [], "snapshots": 0}
    for process, out in processes:
        process.wait(timeout=120)
        result = json.loads(out.read_text())
        for key in ("queries", "rounds"):
            totals[key] += result[key]
        totals["seconds"] = max(totals["seconds"], result["seconds"])
        totals["errors"] += result["errors"]
        totals["inconsistent"] += result["inconsistent"]
        totals["snapshots"] = max(totals["snapshots"], result["snapshots"])
    return totals


def _measure(args: argparse.Namespace) -> dict:
    from warehouse.store import Store
    from worlds.sample import WorldConfig, simulate

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        period_days = max(1, args.days // 4)  # validation and holdout each a quarter of the world, train the rest
        simulate(WorldConfig(users=args.users, days=args.days, seed=args.seed, end_date=END_DATE,
                             holdout_days=2 * period_days), home / "landing")
        database = home / "warehouse" / "crossfade.duckdb"
        with Store(database).write() as con:  # an empty warehouse published, as after a first install
            con.execute("select 1")
        stop, processes = _readers(database, args.readers, Path(tmp), "idle", args.idle_seconds + 60)
        time.sleep(args.idle_seconds)
        idle = _collect(stop, processes)
        stop, processes = _readers(database, args.readers, Path(tmp), "busy", args.max_seconds)
        env = {**os.environ, "CROSSFADE_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
               "CROSSFADE_HOLDOUT_DAYS": str(period_days), "CROSSFADE_VALID_DAYS": str(period_days)}
        started = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "pipelines.cli", "run", "--select", "raw", "--select", "features"],
                             env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.max_seconds)
        run_seconds = time.perf_counter() - started
        busy = _collect(stop, processes)
        with Store(database).read() as con:
            final_events = con.execute("select count(*) from raw.events").fetchall()[0][0]
    if run.returncode != 0:
        raise SystemExit(f"crossfade run failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    figures = {
        "readers": args.readers, "run_seconds": round(run_seconds, 1), "queries": busy["queries"],
        "rounds": busy["rounds"], "errors": len(busy["errors"]) + len(idle["errors"]),
        "inconsistent": len(busy["inconsistent"]) + len(idle["inconsistent"]),
        "snapshots_seen": busy["snapshots"], "final_events": final_events,
        "queries_per_s": busy["queries"] / busy["seconds"], "idle_queries_per_s": idle["queries"] / idle["seconds"],
        "first_problems": (busy["errors"] + busy["inconsistent"])[:5],
    }
    print(f"{args.readers} readers during `crossfade run --select raw --select features` ({run_seconds:.0f} s, "
          f"{args.users} users x {args.days} days): {busy['queries']:,} queries in {busy['rounds']:,} snapshot reads, "
          f"{figures['queries_per_s']:.1f} queries/s, {figures['errors']} errors, {figures['inconsistent']} inconsistent "
          f"answers, {busy['snapshots']} distinct snapshots seen by one reader")
    print(f"same readers with no writer: {figures['idle_queries_per_s']:.1f} queries/s")
    return figures


if __name__ == "__main__":
    main()
