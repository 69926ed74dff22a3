"""Where a stage's time goes: a py-spy raw profile folded onto crossfade's own functions.

Record a running stage, then summarise:

    py-spy record --pid PID --rate 10 --nonblocking --format raw -o models.txt
    python bench/pyspy_summary.py models.txt --rate 10

Each sample is charged to the deepest frame in crossfade's own code (models/, assets/, warehouse/, quality/,
pipelines/): "self" is the time spent there or in the libraries it called, "total" includes its callees
in crossfade. Both in seconds (samples / rate) and as shares of the profile.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

OWN = re.compile(r"\((?:models|assets|warehouse|quality|pipelines)/[\w/]+\.py:\d+\)$")


def fold(lines: list[str]) -> tuple[Counter, Counter, int]:
    """(self samples, total samples) per own function 'name (file)' and the sample count, from raw py-spy lines."""
    own_self: Counter = Counter()
    own_total: Counter = Counter()
    samples = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        own = [_function(frame) for frame in stack.split(";") if OWN.search(frame)]
        if not own:
            own_self["(outside crossfade: start-up, Dagster)"] += n
            continue
        own_self[own[-1]] += n
        for name in dict.fromkeys(own):  # once per stack, even when recursive
            own_total[name] += n
    return own_self, own_total, samples


def _function(frame: str) -> str:
    """'name (file:line)' -> 'name (file)': one row per function, whatever line was running."""
    return re.sub(r":\d+\)$", ")", frame)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("profile", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--rate", type=float, default=100.0, help="the --rate the profile was recorded at (Hz)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own_self, own_total, samples = fold(args.profile.read_text().splitlines())
    if not samples:
        raise SystemExit(f"{args.profile}: no samples (is it py-spy's --format raw output?)")
    print(f"{args.profile}: {samples:,} samples, {samples / args.rate:,.1f} s at {args.rate:g} Hz")
    for title, counts in (("total (with callees)", own_total), ("self (own code and the libraries it calls)", own_self)):
        print(f"\n{title}")
        for name, n in counts.most_common(args.top):
            print(f"  {n / args.rate:9.1f} s  {n / samples:6.1%}  {name}")


if __name__ == "__main__":
    main()
