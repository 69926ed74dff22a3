"""ModelBundle: a saved and reloaded bundle scores users and items exactly as before."""
import polars as pl
import pytest
import torch

from models import hgnn, two_tower
from models.bundle import ModelBundle, empty_slices, evaluate_bundle, slice_metrics
from models.evaluate import EvaluateConfig
from models.fusion import FusionConfig
from models.metrics import offline_metrics
from models.two_tower import TwoTowerConfig
from tests.conftest import EVAL_TYPES, TYPES

CONFIG = TwoTowerConfig(**TYPES, epochs=2, batch_size=128, seed=0)


@pytest.fixture(scope="module")
def bundle(world) -> ModelBundle:
    vectors = world.hgnn.join(world.frames.items.select("item_id", "item_type"), on="item_id")
    model = two_tower.fit(world.frames, CONFIG, text_embeddings=world.text, hgnn_embeddings=vectors,
                          profile_embeddings=world.profile)
    encoder = hgnn.HGNN(16, ["audiobook__audiobook", "audiobook__podcast"], hgnn.HGNNConfig(hidden_dim=8, out_dim=8))
    return ModelBundle(model, vectors, {"model_version": "v1", "as_of": "2024-04-15"}, hgnn.checkpoint(encoder))


def vectors(world, bundle: ModelBundle) -> list[tuple[pl.Series, torch.Tensor]]:
    return [bundle.two_tower.user_vectors(world.frames, world.text, bundle.hgnn_embeddings, world.profile),
            bundle.two_tower.item_vectors(world.frames, world.text, bundle.hgnn_embeddings)]


def test_round_trip_gives_identical_vectors(world, bundle, tmp_path) -> None:
    loaded = ModelBundle.load(bundle.save(tmp_path / "v1"))
    for (ids_before, before), (ids_after, after) in zip(vectors(world, bundle), vectors(world, loaded)):
        assert ids_after.equals(ids_before)
        assert torch.equal(after, before)


def test_round_trip_keeps_manifest_embeddings_and_hgnn(bundle, tmp_path) -> None:
    loaded = ModelBundle.load(bundle.save(tmp_path / "v1"))
    assert loaded.manifest == bundle.manifest
    assert loaded.hgnn_embeddings.equals(bundle.hgnn_embeddings.select("item_id", "item_type", "embedding"))
    for name, tensor in bundle.hgnn_checkpoint["state_dict"].items():
        assert torch.equal(loaded.hgnn_checkpoint["state_dict"][name], tensor)
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "hgnn.pt", "hgnn_item_embeddings.parquet", "manifest.json", "two_tower.pt"]


def test_loading_an_incomplete_folder_names_the_missing_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="two_tower.pt"):
        ModelBundle.load(tmp_path)


@pytest.mark.slow  # ranks the whole catalogue for 800 users twice: tens of seconds on a busy host
def test_evaluation_scores_the_bundled_model_and_keeps_top_10_lists(world, bundle) -> None:
    config = EvaluateConfig(**EVAL_TYPES, k=50, models=("popularity", "two_tower_hgnn"), two_tower=CONFIG)
    metrics, lists = evaluate_bundle(bundle, world.frames, world.text, world.profile, config)
    assert set(metrics["model"]) == {"popularity", "two_tower_hgnn"}
    assert lists["rank"].max() == 10
    assert lists.group_by("model", "user_id").len()["len"].max() == 10
    scores = slice_metrics(metrics, "two_tower_hgnn")
    assert set(scores) == {"all", "warm", "cold", "long_tail"}
    assert scores["cold"]["hr@10"] > slice_metrics(metrics, "popularity")["cold"]["hr@10"]


def test_slice_metrics_report_an_empty_slice_by_its_users() -> None:
    targets = pl.DataFrame({"user_id": ["w"], "item_id": ["a"]})
    lists = pl.DataFrame({"user_id": ["w"], "item_id": ["a"], "rank": [1]})
    scores = offline_metrics(lists, targets, pl.DataFrame({"user_id": ["w"], "is_warm": [True]}),
                             pl.DataFrame({"item_id": ["a"], "popularity_tier": [1]}), catalogue_size=5)
    registered = slice_metrics(scores.with_columns(model=pl.lit("m")), "m")
    assert registered["cold"] == {"users": 0} and registered["long_tail"] == {"users": 0}
    assert registered["all"]["hr@10"] == 1.0 and registered["all"]["users"] == 1
    assert empty_slices(registered) == ["cold", "long_tail"]


@pytest.mark.slow  # ranks the catalogue for 800 users three times
def test_the_fusion_reads_the_bundled_model_never_a_refit(world, bundle, monkeypatch) -> None:
    def refit(*args, **kwargs):
        raise AssertionError("evaluation refitted the two-tower")

    monkeypatch.setattr(two_tower, "fit", refit)
    fusion = FusionConfig(("popularity", "two_tower_hgnn"), (1.0, 1.0))
    config = EvaluateConfig(**EVAL_TYPES, k=50, models=("popularity", "two_tower_hgnn", "fusion"), two_tower=CONFIG,
                            fusion=fusion)
    metrics, lists = evaluate_bundle(bundle, world.frames, world.text, world.profile, config)
    assert set(metrics["model"]) == {"popularity", "two_tower_hgnn", "fusion"}
    fused = lists.filter(pl.col("model") == "fusion")
    assert fused.height and fused.group_by("user_id").len()["len"].max() == 10
    # a user's best item in both components' lists is the fused list's first (1/21 + 1/21 beats any one list)
    both = (lists.filter((pl.col("model") != "fusion") & (pl.col("rank") == 1)).group_by("user_id", "item_id").len()
            .filter(pl.col("len") == 2).select("user_id", "item_id"))
    firsts = fused.filter(pl.col("rank") == 1).select("user_id", "item_id")
    assert both.join(firsts, on=["user_id", "item_id"], how="anti").height == 0
