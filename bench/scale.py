"""Scale: time and peak memory of each nightly stage on a generated world, and how they grow with its size."""
from pathlib import Path
import argparse
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout without the package installed

END_DATE = dt.date(2026, 1, 31)  # fixed, so a cached world stays valid on later days
ITEM_SHARES = {"music": 0.5, "podcast": 0.3, "audiobook": 0.2}  # of --items
STAGES = ("ingest", "features", "retrieval", "enrich", "models", "eval", "serving")
# Every stage but retrieval runs as `crossfade run --select <chain stage>` on the bench's CROSSFADE_HOME:
# the nightly chain's own assets, gates and publishes, each stage in a fresh process.
CHAIN_STAGES = {"ingest": "raw", "features": "features", "enrich": "enrich", "models": "models", "eval": "eval",
                "serving": "serving"}
STEP_TIME = re.compile(r"\((?P<step>[\d.]+) s(?:, publish (?P<publish>[\d.]+) s)?\)\s*$")
LLM_CALL_BUDGET = 8  # LLM calls per enrichment asset, as in the demo: SmolLM2 on 2 cores takes seconds a call
RETRIEVAL_DIM = 64  # --retrieval-dim: 2T-HGNN's served vectors are 128 + the history factor's 256 = 384 wide
RETRIEVAL_K = 100
# --smoke: the same night on a world small enough for about 15 minutes on 2 cores (explicit flags still win)
SMOKE = {"users": 5_000, "items": 1_000, "events": 250_000, "fractions": "1.0", "stages": ",".join(STAGES)}
NIGHT = tuple(CHAIN_STAGES)  # the stages `crossfade run` runs in a night, in order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=50_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--fractions", default="0.1,1.0",
                        help="sizes to run, as shares of --users/--items/--events (growth is reported between them)")
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {STAGES}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out",
                        help="generated landing zones are kept here and reused")
    parser.add_argument("--work", type=Path,
                        help="keep the CROSSFADE_HOME of the run here (one --fractions value), so later stages can "
                             "run again on it with --stages; default: a temporary folder under --cache")
    parser.add_argument("--smoke", action="store_true",
                        help=f"the whole night on a small world ({SMOKE['users']:,} users, {SMOKE['items']:,} items, "
                             f"{SMOKE['events']:,} events): about 15 minutes here")
    parser.add_argument("--retrieval-dim", type=int, default=RETRIEVAL_DIM,
                        help="width of the random vectors the retrieval stage ranks (2T-HGNN serves 384)")
    parser.add_argument("--stage", choices=tuple(STAGE_WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--landing", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--database", type=Path, help=argparse.SUPPRESS)
    if parser.parse_known_args()[0].smoke:
        parser.set_defaults(**SMOKE)
    args = parser.parse_args()
    if args.stage:
        print(json.dumps(STAGE_WORKERS[args.stage](args)))
        return
    stages = tuple(stage.strip() for stage in args.stages.split(",") if stage.strip())
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        raise SystemExit(f"--stages: unknown {unknown}; choose from {list(STAGES)}")
    fractions = sorted(float(part) for part in args.fractions.split(","))
    if not fractions or min(fractions) <= 0:
        raise SystemExit(f"--fractions must be positive shares such as 0.1,1.0 (got {args.fractions!r})")
    if args.work and len(fractions) != 1:
        raise SystemExit("--work keeps one run's home: give one --fractions value with it")
    runs = {fraction: _measure(args, fraction, stages) for fraction in fractions}
    if len(fractions) > 1:
        _print_growth(runs, stages)
    _print_night(runs[fractions[-1]])


def _world(args: argparse.Namespace, fraction: float) -> tuple[Path, dict]:
    """The cached landing zone of this size, generated on first use."""
    from bench.ingest import cached_world
    from worlds.sample import WorldConfig

    users, items, events = (max(1, round(value * fraction)) for value in (args.users, args.items, args.events))
    config = WorldConfig(
        users=users, days=args.days, seed=args.seed, end_date=END_DATE,
        events_per_user_day=events / (users * args.days),
        items_per_type={kind: max(200, round(items * share)) for kind, share in ITEM_SHARES.items()},
    )
    return cached_world(args.cache / f"scale-u{users}-i{items}-e{events}-d{args.days}-s{args.seed}", config)


def _run_stage(stage: str, landing_dir: Path, database: Path, retrieval_dim: int = RETRIEVAL_DIM) -> dict:
    """One stage in a fresh process; wait4 gives that process's own peak RSS."""
    if stage in CHAIN_STAGES:
        home = database.parent.parent
        command = [str(Path(sys.executable).with_name("crossfade")), "run", "--select", CHAIN_STAGES[stage]]
        env = os.environ | {"CROSSFADE_HOME": str(home), "CROSSFADE_LLM_CALL_BUDGET": str(LLM_CALL_BUDGET)}
    else:
        command = [sys.executable, __file__, f"--stage={stage}", f"--landing={landing_dir}", f"--database={database}",
                   f"--retrieval-dim={retrieval_dim}"]
        env = None
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    stdout = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"stage {stage} failed:\n{stdout[-3000:]}")
    if stage in CHAIN_STAGES:
        result = {"seconds": time.perf_counter() - started, "detail": _chain_detail(stdout), **_gate_seconds(stdout)}
        (home / f"scale-{stage}.log").write_text(stdout)
    else:
        result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_gib"] = usage.ru_maxrss / 2**20  # KiB on Linux
    # CPU seconds beside wall seconds: on a shared host the wall clock also counts time spent waiting for a core
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def _measure(args: argparse.Namespace, fraction: float, stages: tuple[str, ...]) -> dict:
    landing_dir, world = _world(args, fraction)
    rows = world["event_rows"]
    print(f"\nfraction {fraction:g}: {world['users']:,} users, {sum(world['items_per_type'].values()):,} items, "
          f"{rows:,} event rows in {world['event_files']} files", flush=True)
    work = args.work or args.cache / f"scale-work-{os.getpid()}"
    if "ingest" in stages:
        shutil.rmtree(work, ignore_errors=True)
    database = work / "warehouse" / "crossfade.duckdb"  # the layout of CROSSFADE_HOME, for the chain stages
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "landing").exists():
        (work / "landing").symlink_to(landing_dir.absolute(), target_is_directory=True)
    results: dict = {"rows": rows}
    try:
        if "ingest" in stages:  # the plain load is compared with ingestion
            results["baseline"] = _run_stage_baseline(landing_dir, work)
            base = results["baseline"]
            print(f"  {'baseline: plain DuckDB load':<32}{base['seconds']:8.1f} s  cpu {base['cpu_s']:7.1f} s  "
                  f"peak {base['peak_gib']:5.2f} GiB  "
                  f"{rows / base['seconds']:>12,.0f} rows/s", flush=True)
        for stage in stages:
            result = _run_stage(stage, landing_dir, database, args.retrieval_dim)
            results[stage] = result
            shares = (f"  gates {result['gate_s']:.1f} s ({result['gate_s'] / result['seconds']:.1%}), publish "
                      f"{result['publish_s']:.2f} s ({result['publish_s'] / result['seconds']:.2%}, at most "
                      f"{result['publish_max_s']:.2f} s)" if "gate_s" in result else "")
            print(f"  {stage:<32}{result['seconds']:8.1f} s  cpu {result['cpu_s']:7.1f} s  peak {result['peak_gib']:5.2f} GiB"
                  f"{shares}  [{result['detail']}]", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _chain_detail(output: str) -> str:
    """The tables a chain stage materialised, with rows, and its failed checks, from `crossfade run`'s lines."""
    done = [line.split("materialised", 1)[1].split() for line in output.splitlines() if "  materialised " in line]
    failed = [line.split("check", 1)[1].split()[0] for line in output.splitlines() if " FAILED" in line and " check " in line]
    # "materialised models/registry  1 rows  (0.4 s)", or without a row count "materialised models/two_tower  (1282.3 s)"
    tables = ", ".join(f"{words[0]} {words[1]}" if len(words) > 1 and not words[1].startswith("(") else words[0]
                       for words in done)
    return tables + (f"; FAILED checks: {', '.join(failed)}" if failed else "")


def _gate_seconds(output: str) -> dict[str, float]:
    """Seconds the stage's gates took (audit and publish) and its publishes alone, from the runner's check lines."""
    times = [STEP_TIME.search(line) for line in output.splitlines() if "  check " in line]
    times = [match for match in times if match]
    publishes = [float(match["publish"]) for match in times if match["publish"]]
    return {"gate_s": sum(float(match["step"]) for match in times), "gates": len(times),
            "publish_s": sum(publishes), "publish_max_s": max(publishes, default=0.0)}


def _run_stage_baseline(landing_dir: Path, work: Path) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run_stage("baseline", landing_dir, work / "baseline.duckdb")
    finally:
        (work / "baseline.duckdb").unlink(missing_ok=True)


def _print_growth(runs: dict[float, dict], stages: tuple[str, ...]) -> None:
    fractions = sorted(runs)
    print(f"\n{'stage':<12}" + "".join(f"{f'{f:g}: s':>12}{'cpu s':>9}{'GiB':>7}" for f in fractions)
          + f"{'time growth':>14}{'cpu growth':>12}")
    for stage in [name for name in ("baseline", *stages) if all(name in runs[f] for f in fractions)]:
        cells = "".join(f"{runs[f][stage]['seconds']:>12.1f}{runs[f][stage]['cpu_s']:>9.1f}{runs[f][stage]['peak_gib']:>7.2f}"
                        for f in fractions)
        low, high = runs[fractions[0]][stage], runs[fractions[-1]][stage]
        print(f"{stage:<12}{cells}{high['seconds'] / low['seconds']:>13.1f}x{high['cpu_s'] / max(low['cpu_s'], 1e-3):>11.1f}x")
    size_growth = runs[fractions[-1]]["rows"] / runs[fractions[0]]["rows"]
    print(f"event rows grew {size_growth:.1f}x")
    print(f"\n{'stage':<12}" + "".join(f"{f'{f:g}: gates s':>15}{'publish s':>11}{'max':>7}" for f in fractions))
    for stage in [name for name in stages if all("gate_s" in runs[f].get(name, {}) for f in fractions)]:
        print(f"{stage:<12}" + "".join(f"{runs[f][stage]['gate_s']:>15.1f}{runs[f][stage]['publish_s']:>11.2f}"
                                      f"{runs[f][stage]['publish_max_s']:>7.2f}" for f in fractions))


def _print_night(results: dict) -> None:
    """The largest run's stages as a table, the night's total, and its RESULT lines."""
    ran = [stage for stage in ("baseline", *STAGES) if stage in results]
    print(f"\n{'stage':<12}{'s':>10}{'cpu s':>10}{'peak GiB':>10}{'gates s':>10}{'publish s':>11}")
    for stage in ran:
        result = results[stage]
        gates = (f"{result['gate_s']:>10.1f}{result['publish_s']:>11.2f}" if "gate_s" in result else "")
        print(f"{stage:<12}{result['seconds']:>10.1f}{result['cpu_s']:>10.1f}{result['peak_gib']:>10.2f}{gates}")
    if "ingest" in results:
        ours = results["rows"] / results["ingest"]["seconds"] * 60
        baseline = results["rows"] / results["baseline"]["seconds"] * 60
        print(f"RESULT scale_ingest ours={ours:.0f} baseline={baseline:.0f} ratio={ours / baseline:.3f} unit=events/min")
    night = night_figures(results)
    if night is None:
        return
    print(f"{'night':<12}{night['seconds']:>10.1f}{night['cpu_s']:>10.1f}{night['peak_gib']:>10.2f}{night['gate_s']:>10.1f}"
          f"{night['publish_s']:>11.2f}   plain baselines (load + retrieval) {night['baseline_s']:.1f} s")
    print(f"RESULT night ours={night['ours']:.1f} baseline={night['baseline']:.1f} ratio={night['ratio']:.4f} "
          "unit=events/s")


def night_figures(results: dict) -> dict | None:
    """The whole night against the sum of its plain baselines (the plain DuckDB load and the retrieval
    arithmetic), as events per second of each; None unless every night stage and both baselines ran."""
    if not all(stage in results for stage in (*NIGHT, "baseline", "retrieval")):
        return None
    stages = [results[stage] for stage in NIGHT]
    seconds = sum(stage["seconds"] for stage in stages)
    baseline_s = results["baseline"]["seconds"] + results["retrieval"]["seconds"]
    ours, baseline = results["rows"] / seconds, results["rows"] / baseline_s
    return {"seconds": seconds, "cpu_s": sum(stage["cpu_s"] for stage in stages),
            "peak_gib": max(stage["peak_gib"] for stage in stages),
            "gate_s": sum(stage.get("gate_s", 0.0) for stage in stages),
            "publish_s": sum(stage.get("publish_s", 0.0) for stage in stages),
            "baseline_s": baseline_s, "ours": ours, "baseline": baseline, "ratio": ours / baseline}


def _retrieval(args: argparse.Namespace) -> dict:
    """Top-K target items for every user from random unit vectors: the candidate stage's arithmetic."""
    import numpy as np

    from models.retrieval import top_k_items
    from warehouse.store import Store

    with Store(args.database).audit() as con:
        users = con.execute("select count(*) from features.user_stats").fetchall()[0][0]
        items = con.execute("select count(*) from raw.items where item_type = 'audiobook'").fetchall()[0][0]
    rng = np.random.default_rng(0)
    user_vectors = rng.standard_normal((users, args.retrieval_dim), dtype=np.float32)
    item_vectors = rng.standard_normal((items, args.retrieval_dim), dtype=np.float32)
    started = time.perf_counter()
    ranked = sum(int((chunk.items >= 0).sum()) for chunk in top_k_items(user_vectors, item_vectors, RETRIEVAL_K))
    return {"seconds": time.perf_counter() - started,
            "detail": f"{users:,} users x {items:,} items, d={args.retrieval_dim}, top {RETRIEVAL_K}",
            "ranked": ranked}


def _baseline(args: argparse.Namespace) -> dict:
    """Every event file loaded into one table by DuckDB with no typing, accounting or dedup."""
    import duckdb

    from warehouse import landing

    started = time.perf_counter()
    con = duckdb.connect(str(args.database))
    readers = {"jsonl": "read_json_auto($paths, union_by_name = true, ignore_errors = true)",
               "csv": "read_csv_auto($paths, union_by_name = true, ignore_errors = true, all_varchar = true)",
               "parquet": "read_parquet($paths, union_by_name = true)"}
    paths: dict[str, list[str]] = {}
    for key in landing.event_partitions(args.landing):
        for entry in landing.data_files(landing.event_partition_dir(args.landing, key)):
            paths.setdefault(entry.fmt, []).append(str(entry.path))
    con.execute("create table events (event_id varchar, user_id varchar, item_id varchar)")
    for fmt, files in paths.items():
        con.execute(f"insert into events select cast(event_id as varchar), cast(user_id as varchar), "
                    f"cast(item_id as varchar) from {readers[fmt]}", {"paths": files})
    con.execute("checkpoint")
    con.close()
    return {"seconds": time.perf_counter() - started}


STAGE_WORKERS = {"retrieval": _retrieval, "baseline": _baseline}


if __name__ == "__main__":
    main()
