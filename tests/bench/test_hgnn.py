"""bench/hgnn.py's variants: HGNNConfig fields in their own types, unknown names refused."""
from __future__ import annotations

import argparse

import pytest

from bench import hgnn


def test_a_variant_reads_each_field_in_its_config_type() -> None:
    variant = hgnn.parse_variant("num_threads=2,batch_size=2048,lr=0.002,fanouts=10+5,balanced=false,"
                                 "infer_fanouts=-1+10")
    assert variant == {"num_threads": 2, "batch_size": 2048, "lr": 0.002, "fanouts": (10, 5), "balanced": False,
                       "infer_fanouts": (-1, 10)}
    assert [type(variant[name]) for name in ("num_threads", "lr", "balanced")] == [int, float, bool]


@pytest.mark.parametrize("text", ["threads=2", "batch_size", "batch_size="])
def test_an_unknown_field_or_a_missing_value_is_refused_by_name(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="name=value"):
        hgnn.parse_variant(text)
