"""bench/low_rank.py's cut of EASE's weights: the best rank-r approximation, B itself at its own rank."""
from __future__ import annotations

import numpy as np

from bench import low_rank


def test_each_cut_has_its_rank_and_the_eckart_young_error_and_a_cut_past_bs_rank_is_b() -> None:
    rng = np.random.default_rng(0)
    weights = (rng.standard_normal((30, 4)) @ rng.standard_normal((4, 12))).astype(np.float32)  # rank 4
    weights[:, 0] += rng.standard_normal(30).astype(np.float32)  # rank 5
    values = np.linalg.svd(weights.astype(np.float64), compute_uv=False)
    cuts = low_rank.truncated(weights, [1, 3, 5, 8])
    for r in (1, 3):
        assert np.linalg.matrix_rank(cuts[r], tol=1e-3) == r
        assert np.isclose(np.linalg.norm(weights - cuts[r]), np.sqrt((values[r:] ** 2).sum()), rtol=1e-4)
    assert np.allclose(cuts[5], weights, atol=1e-4) and np.allclose(cuts[8], weights, atol=1e-4)
    assert all(cut.dtype == np.float32 and cut.flags.c_contiguous for cut in cuts.values())
