"""Benchmark exact top-K candidates: models.retrieval against faiss IndexFlatIP and plain torch."""
from collections.abc import Callable
from pathlib import Path
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

METHODS = ("ours", "faiss", "torch")
Keep = Callable[[int, np.ndarray], None]  # (first user row, (users, K) item rows) for the sample
Method = Callable[[Keep], str]  # runs every timed user, returns what ran


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--chunk", type=int, default=512, help="users per chunk (per worker) for ours")
    parser.add_argument("--faiss-chunk", type=int, default=16_384, help="queries per faiss search call")
    parser.add_argument("--torch-chunk", type=int, default=1024, help="users per plain torch matmul")
    parser.add_argument("--consumed", type=int, default=0,
                        help="also time ours with this many random consumed items excluded per user")
    parser.add_argument("--baseline-users", type=int,
                        help="time faiss and plain torch on only the first N users and extrapolate their rate")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--check", type=int, default=500, help="sampled users for the exactness check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20k users: a smoke run in seconds")
    parser.add_argument("--worker", choices=METHODS + ("ours+consumed",), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--timed", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.users = min(args.users, 20_000)
    args.baseline_users = min(args.baseline_users or args.users, args.users)
    if args.worker:
        _work(args)
        return
    _compare(args)


def _compare(args: argparse.Namespace) -> None:
    """Run each method in its own process, so each peak RSS is its own, then compare."""
    same = args.baseline_users == args.users
    print(f"exact top-{args.k}: {args.users:,} users x {args.items:,} items, d={args.dim}, "
          f"{args.threads} threads, seed {args.seed}; " + (
              f"every method times all {args.users:,} users" if same else
              f"ours times all {args.users:,} users, faiss and torch only the first "
              f"{args.baseline_users:,}: THEIR RATES ARE EXTRAPOLATED from that subset"))
    methods = list(METHODS) + (["ours+consumed"] if args.consumed else [])
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            out = Path(tmp) / f"{method}.npz"
            flags = [f"--{name.replace('_', '-')}={getattr(args, name)}" for name in (
                "users", "items", "dim", "k", "chunk", "faiss_chunk", "torch_chunk", "consumed",
                "baseline_users", "threads", "check", "seed")]
            timed = args.users if method.startswith("ours") else args.baseline_users
            done = subprocess.run(
                [sys.executable, __file__, *flags, f"--worker={method}", f"--out={out}", f"--timed={timed}"],
                check=True, capture_output=True, text=True,
            )
            runs[method] = run = json.loads(done.stdout.strip().splitlines()[-1])
            run["sample"], run["rate"] = dict(np.load(out)), timed / run["seconds"]
            print(f"{method:>14}: {timed:9,} users {run['seconds']:7.1f} s {run['rate']:7.0f} users/s   "
                  f"{timed / run['cpu_seconds']:6.0f} users/CPU-s   peak RSS +{run['peak_mib']:5.0f} MiB   "
                  f"({run['note']})", flush=True)
        _check(args, runs["ours"]["sample"], runs["faiss"]["sample"])
    ours, faiss_rate, torch_rate = (runs[m]["rate"] for m in ("ours", "faiss", "torch"))
    print(f"ours / plain torch: {ours / torch_rate:.2f}x")
    print(f"RESULT candidates ours={ours:.0f} baseline={faiss_rate:.0f} ratio={ours / faiss_rate:.3f} unit=users/s")


def _check(args: argparse.Namespace, ours: dict, faiss_out: dict) -> None:
    """Sampled users: our sets against faiss's; any difference must be a float32 near-tie."""
    users, items = _data(args)
    rows = ours["rows"]
    truth = users[rows].astype(np.float64) @ items.astype(np.float64).T  # (check, items)
    kth = -np.sort(-truth, axis=1)[:, args.k - 1]
    same, near_ties = 0, 0
    for r in range(rows.size):
        a, b = set(ours["items"][r]), set(faiss_out["items"][r])
        if a == b:
            same += 1
            continue
        differing = np.fromiter(a ^ b, dtype=np.int64)
        # A swap is a tie when the swapped items score within float32 rounding of the K-th score.
        if np.all(np.abs(truth[r, differing] - kth[r]) <= 1e-4 * (1 + abs(kth[r]))):
            near_ties += 1
    exact_ours = np.mean([
        np.isin(np.flatnonzero(truth[r] > kth[r] + 1e-4 * (1 + abs(kth[r]))), ours["items"][r]).all()
        for r in range(rows.size)
    ])
    print(f"exactness on {rows.size} sampled users: {same} identical sets to faiss, {near_ties} differ "
          f"only by float32 near-ties at the K-th score, {rows.size - same - near_ties} real differences; "
          f"float64 reference top-K contained in ours for {exact_ours:.1%}")
    if same + near_ties != rows.size:
        raise SystemExit("ours and faiss disagree beyond ties: the retrieval is not exact")


def _data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(args.seed)
    items = rng.standard_normal((args.items, args.dim), dtype=np.float32)
    users = rng.standard_normal((args.users, args.dim), dtype=np.float32)
    return users, items


def _work(args: argparse.Namespace) -> None:
    users, items = _data(args)
    # Drawn among the users every method times, so every method has them.
    sample = np.sort(np.random.default_rng(args.seed + 1).choice(
        args.baseline_users, min(args.check, args.baseline_users), replace=False))
    users = users[: args.timed]
    kept = {"rows": sample, "items": np.zeros((sample.size, args.k), dtype=np.int64)}
    exclusions = _consumed(args) if args.worker == "ours+consumed" else {}

    def keep(start: int, found: np.ndarray) -> None:
        inside = sample[(sample >= start) & (sample < start + found.shape[0])]
        kept["items"][np.searchsorted(sample, inside)] = found[inside - start]

    run = {"ours": _ours, "ours+consumed": _ours, "faiss": _faiss, "torch": _torch}[args.worker]
    prepare = run(args, users, items, exclusions)  # imports, index build, thread settings
    before = _rss_mib("VmRSS")
    resettable = _reset_peak()
    started, cpu_started = time.perf_counter(), _cpu_seconds()
    note = prepare(keep)
    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
    peak = _rss_mib("VmHWM") if resettable else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(args.out, **kept)
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "peak_mib": peak - before,
                      "note": note + ("" if resettable else "; peak includes set-up")}))


def _ours(args: argparse.Namespace, users: np.ndarray, items: np.ndarray, exclusions: dict) -> Method:
    import torch
    from models.retrieval import top_k_items

    torch.set_num_threads(args.threads)

    def go(keep: Keep) -> str:
        for chunk in top_k_items(users, items, args.k, chunk_users=args.chunk, **exclusions):
            keep(chunk.user_start, chunk.items)
        extra = f", {args.consumed} consumed items excluded per user" if exclusions else ""
        return f"models.retrieval, chunks of {args.chunk} users{extra}"
    return go


def _faiss(args: argparse.Namespace, users: np.ndarray, items: np.ndarray, exclusions: dict) -> Method:
    try:
        import faiss
    except ImportError:
        raise SystemExit("faiss is this benchmark's baseline: .venv/bin/python -m pip install -e '.[bench]'") from None

    faiss.omp_set_num_threads(args.threads)
    index = faiss.IndexFlatIP(args.dim)
    index.add(items)

    def go(keep: Keep) -> str:
        for start in range(0, users.shape[0], args.faiss_chunk):
            _, found = index.search(users[start : start + args.faiss_chunk], args.k)
            keep(start, found)
        return f"faiss {faiss.__version__} IndexFlatIP.search, {args.faiss_chunk} queries per call"
    return go


def _torch(args: argparse.Namespace, users: np.ndarray, items: np.ndarray, exclusions: dict) -> Method:
    import torch

    torch.set_num_threads(args.threads)
    user_t, item_t = torch.from_numpy(users), torch.from_numpy(items)

    def go(keep: Keep) -> str:
        for start in range(0, users.shape[0], args.torch_chunk):
            scores = user_t[start : start + args.torch_chunk] @ item_t.T
            keep(start, torch.topk(scores, args.k, dim=1).indices.numpy())
        return f"torch.mm + torch.topk, chunks of {args.torch_chunk} users"
    return go


def _consumed(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed + 2)
    indices = rng.integers(0, args.items, args.users * args.consumed, dtype=np.int32)
    return {"exclude_indptr": np.arange(0, args.users * args.consumed + 1, args.consumed, dtype=np.int64),
            "exclude_indices": indices}


def _reset_peak() -> bool:
    """Reset this process's peak RSS (Linux), so the peak covers the timed work only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_mib(field: str) -> float:
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(field))
    return int(line.split()[1]) / 1024


def _cpu_seconds() -> float:
    """CPU time of all this process's threads: what a method costs, whatever else runs beside it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
