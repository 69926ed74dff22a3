"""bench/scale.py's reading of `crossfade run` lines and bench/pyspy_summary.py's folding of py-spy profiles."""
from __future__ import annotations

from bench import pyspy_summary, scale

RUN_OUTPUT = """\
[08:22:00]   materialised models/hgnn_item_embeddings      50,000 rows  (1430.2 s)
[08:22:00]   check models_hgnn_item_embeddings_suite      passed  (0.4 s, publish 0.07 s)
[08:22:00]   materialised models/two_tower                   (1282.3 s)
[08:22:00]   check models_two_tower_promotion_gate        passed  (0.4 s, publish 0.16 s)
[08:22:00]   materialised models/registry                  1 rows  (0.4 s)
[08:22:00]   check models_registry_suite                  FAILED  (0.6 s)
"""


def test_a_stage_s_detail_names_its_tables_with_rows_and_its_failed_checks() -> None:
    assert scale._chain_detail(RUN_OUTPUT) == ("models/hgnn_item_embeddings 50,000, models/two_tower, "
                                               "models/registry 1; FAILED checks: models_registry_suite")


def test_gate_seconds_sum_every_check_and_publish_only_where_one_ran() -> None:
    seconds = scale._gate_seconds(RUN_OUTPUT)
    assert seconds["gates"] == 3
    assert abs(seconds["gate_s"] - 1.4) < 1e-9
    assert abs(seconds["publish_s"] - 0.23) < 1e-9
    assert seconds["publish_max_s"] == 0.16


def stage(seconds: float, peak: float, gates: float = 0.0) -> dict:
    return {"seconds": seconds, "cpu_s": seconds * 1.5, "peak_gib": peak, "gate_s": gates, "publish_s": gates / 10}


def test_the_night_is_every_chain_stage_against_the_plain_load_plus_the_retrieval_arithmetic() -> None:
    results = {"rows": 36_000, "baseline": stage(2, 0.1), "retrieval": stage(1, 0.2), "ingest": stage(10, 1, 2),
               "features": stage(20, 3, 4), "enrich": stage(30, 2), "models": stage(40, 5, 1), "eval": stage(50, 4),
               "serving": stage(30, 2, 3)}
    night = scale.night_figures(results)
    assert (night["seconds"], night["peak_gib"], night["gate_s"], night["baseline_s"]) == (180, 5, 10, 3)
    assert (night["ours"], night["baseline"], night["ratio"]) == (200, 12_000, 200 / 12_000)
    assert abs(night["publish_s"] - 1.0) < 1e-9
    del results["retrieval"]
    assert scale.night_figures(results) is None  # a partial night has no whole-night figure


def test_samples_go_to_the_deepest_own_frame_and_totals_count_each_own_frame_once_per_stack() -> None:
    lines = [
        "<module> (crossfade:6);main (pipelines/cli.py:72);train (models/hgnn.py:184);"
        "forward (models/hgnn.py:70);index_select (torch/_tensor.py:1) 30",
        "<module> (crossfade:6);main (pipelines/cli.py:72);train (models/hgnn.py:190);"
        "train (models/hgnn.py:184);backward (torch/autograd.py:9) 12",
        "<module> (crossfade:6);execute (dagster/_core/api.py:3) 5",
        "not a profile line",
    ]
    own_self, own_total, samples = pyspy_summary.fold(lines)
    assert samples == 47
    assert own_self == {"forward (models/hgnn.py)": 30, "train (models/hgnn.py)": 12,
                        "(outside crossfade: start-up, Dagster)": 5}
    assert own_total["train (models/hgnn.py)"] == 42  # the recursive stack counts once
    assert own_total["main (pipelines/cli.py)"] == 42
