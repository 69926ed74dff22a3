"""HGNN: hinge loss, max-pool paths, training on planted communities, inductive embedding, checkpoints."""
from dataclasses import replace

import polars as pl
import pytest
import torch
from torch_geometric.utils import scatter

from models import hgnn
from models.graph import build_graph
from models.positional import spectral_positions

A, P = "audiobook", "podcast"
COMMUNITIES = 4
# Small batches give a tiny graph enough steps; one thread because thread start-up dominates tiny ops.
FAST = hgnn.HGNNConfig(hidden_dim=32, out_dim=16, fanouts=(5, 5), negatives=3, batch_size=32, max_epochs=20,
                       patience=20, num_threads=1, seed=0, positional_dim=0)


def planted(n_a: int = 40, n_p: int = 80, isolated: int = 2, seed: int = 0, dim: int = 16, noise: float = 3.0):
    """Items in 4 communities: edges mostly inside a community, features = community centre + noise.

    The last `isolated` audiobooks have no edges. Returns (edges, nodes, features, community)."""
    g = torch.Generator().manual_seed(seed)
    n = n_a + n_p
    ids = [f"a{i:03d}" for i in range(n_a)] + [f"p{i:03d}" for i in range(n_p)]
    types = [A] * n_a + [P] * n_p
    community = torch.arange(n) % COMMUNITIES
    connected = torch.ones(n, dtype=torch.bool)
    connected[n_a - isolated:n_a] = False
    i, j = torch.triu_indices(n, n, 1)
    same = community[i] == community[j]
    p = torch.where(same, 0.25, 0.01)
    keep = (torch.rand(i.numel(), generator=g) < p) & connected[i] & connected[j]
    i, j = i[keep].tolist(), j[keep].tolist()
    edges = pl.DataFrame({
        "src_item_id": [ids[x] for x in i], "dst_item_id": [ids[y] for y in j],
        "src_type": [types[x] for x in i], "dst_type": [types[y] for y in j],
        "relation": ["__".join(sorted((types[x], types[y]))) for x, y in zip(i, j)], "co_listeners": 1,
    })
    centres = torch.nn.functional.normalize(torch.randn(COMMUNITIES, dim, generator=g), dim=-1) * 2
    features = centres[community] + noise * torch.randn(n, dim, generator=g) / dim ** 0.5
    return edges, pl.DataFrame({"item_id": ids, "item_type": types}), features, community


def separation(z: torch.Tensor, community: torch.Tensor) -> tuple[float, float, float]:
    """Mean dot product of same-community pairs, of cross-community pairs, and the AUC between them."""
    i, j = torch.triu_indices(len(community), len(community), 1)
    scores, same = (z @ z.T)[i, j], community[i] == community[j]
    auc = (scores[same][:, None] > scores[~same][None, :]).float().mean().item()
    return scores[same].mean().item(), scores[~same].mean().item(), auc


@pytest.fixture(scope="module")
def world():
    edges, nodes, features, community = planted()
    return build_graph(edges, nodes), features, community


@pytest.fixture(scope="module")
def trained(world):
    graph, features, _ = world
    return hgnn.train(graph, features, FAST)


def test_hinge_loss_known_values():
    a = torch.tensor([[1.0, 0.0]])
    assert hgnn.hinge_loss(a, a, torch.tensor([[[0.0, 1.0]]]), 0.5).item() == 0.0  # 0 - 1 + 0.5 < 0
    assert hgnn.hinge_loss(a, torch.tensor([[0.0, 1.0]]), a[:, None], 0.5).item() == pytest.approx(1.5)


def test_dense_max_matches_scatter_max_in_value_and_gradient():
    torch.manual_seed(0)
    raw = torch.randn(50, 8, requires_grad=True)
    edge_index = torch.stack([torch.randint(50, (200,)), torch.randint(30, (200,))])
    weights = torch.randn(35, 8)
    pooled = hgnn.RelationMaxPool()(torch.relu(raw), edge_index, 35)  # the gradient path
    (pooled * weights).sum().backward()
    ours = raw.grad.clone()
    raw.grad = None
    reference = scatter(torch.relu(raw)[edge_index[0]], edge_index[1], 0, dim_size=35, reduce="max")
    (reference * weights).sum().backward()
    with torch.no_grad():
        inference = hgnn.RelationMaxPool()(torch.relu(raw), edge_index, 35)
    assert torch.allclose(pooled, reference) and torch.allclose(inference, reference)
    assert pooled[30:].abs().sum() == 0  # targets without neighbours get zeros
    assert torch.allclose(ours, raw.grad, atol=1e-6)


def test_training_lowers_loss_and_separates_communities(world, trained):
    _, features, community = world
    losses = [row["train_loss"] for row in trained.curve]
    assert losses[-1] < losses[0]
    same, cross, auc = separation(trained.embeddings, community)
    assert same > cross + 0.3
    *_, text_auc = separation(torch.nn.functional.normalize(features, dim=-1), community)
    assert auc > text_auc + 0.1  # the graph adds to what the (noisy) text alone says


def test_every_node_gets_a_unit_vector_and_a_report(world, trained):
    graph, _, _ = world
    z = trained.embeddings
    assert z.shape == (graph.num_nodes, FAST.out_dim)
    assert torch.isfinite(z).all() and torch.allclose(z.norm(dim=1), torch.ones(graph.num_nodes), atol=1e-5)
    frame = trained.embeddings_frame()
    assert frame.columns == ["item_id", "item_type", "embedding"] and frame.height == graph.num_nodes
    assert trained.edge_counts == graph.edge_counts()
    assert "| total |" in trained.edge_counts_markdown
    assert set(trained.timings) == {"split", "train", "valid", "embed", "total"}
    assert all(row["seconds"] > 0 for row in trained.curve)


def test_best_checkpoint_is_the_lowest_validation_loss(world, trained):
    graph, features, _ = world
    valid = [row["valid_loss"] for row in trained.curve]
    assert trained.best_epoch == 1 + valid.index(min(valid))
    assert torch.allclose(hgnn.embed(trained.model_state, graph, features), trained.embeddings, atol=1e-6)


def test_checkpoint_round_trip(world, trained, tmp_path):
    graph, features, _ = world
    path = tmp_path / "hgnn.pt"
    hgnn.save_checkpoint(trained.model_state, path)
    loaded = hgnn.load_checkpoint(path)
    assert loaded["relations"] == list(graph.relations)
    assert torch.allclose(hgnn.embed(loaded, graph, features), trained.embeddings, atol=1e-6)


def test_same_seed_same_model(world, trained):
    graph, features, _ = world
    threads = torch.get_num_threads()
    again = hgnn.train(graph, features, FAST)
    assert torch.get_num_threads() == threads  # num_threads holds only during training
    assert [r["train_loss"] for r in again.curve] == pytest.approx([r["train_loss"] for r in trained.curve])
    assert torch.allclose(again.embeddings, trained.embeddings, atol=1e-5)


def test_unseen_item_embeds_inductively_near_its_community():
    edges, nodes, features, community = planted(noise=0.5)
    new = "a010"  # community 2, absent from the training graph
    row = nodes["item_id"].to_list().index(new)
    train_nodes = nodes.filter(pl.col("item_id") != new)
    train_edges = edges.filter((pl.col("src_item_id") != new) & (pl.col("dst_item_id") != new))
    keep = torch.arange(len(community)) != row
    result = hgnn.train(build_graph(train_edges, train_nodes), features[keep], FAST)
    for graph_edges in (edges, train_edges):  # with its co-listening edges, and with none
        z = hgnn.embed(result.model_state, build_graph(graph_edges, nodes), features)
        assert torch.isfinite(z[row]).all() and z[row].norm().item() == pytest.approx(1.0, abs=1e-5)
        scores = z[keep] @ z[row]
        by_community = torch.stack([scores[community[keep] == c].mean() for c in range(COMMUNITIES)])
        assert int(by_community.argmax()) == int(community[row])


def test_single_relation_model_uses_only_that_relation():
    edges, nodes, features, _ = planted()
    graph = build_graph(edges, nodes, relations=["podcast__podcast"])
    result = hgnn.train(graph, features, replace(FAST, max_epochs=2))
    assert result.model_state["relations"] == ["podcast__podcast"]
    neighbour_weights = {k.split(".")[3] for k in result.model_state["state_dict"] if ".neighbour." in k}
    assert neighbour_weights == {"podcast__podcast"}
    # Ablation F: embed audiobooks inductively on the full graph; the relations it never saw are ignored.
    z = hgnn.embed(result.model_state, build_graph(edges, nodes), features)
    assert torch.isfinite(z).all() and z.shape[0] == nodes.height


def test_balanced_switch_sets_the_edges_per_epoch(world):
    graph, features, _ = world
    config = replace(FAST, max_epochs=1)
    balanced = hgnn.train(graph, features, config)
    everything = hgnn.train(graph, features, replace(config, balanced=False))
    train_counts = [n - round(n * config.valid_fraction) for n in graph.edge_counts().values()]
    assert balanced.curve[0]["train_edges"] == len(train_counts) * min(train_counts)
    assert everything.curve[0]["train_edges"] == sum(train_counts)


def test_on_epoch_sees_each_curve_row_as_its_epoch_ends(world):
    graph, features, _ = world
    seen: list[dict[str, float]] = []
    result = hgnn.train(graph, features, replace(FAST, max_epochs=2), on_epoch=lambda row: seen.append(dict(row)))
    assert [row["epoch"] for row in seen] == [1, 2]
    assert seen == result.curve


def test_shared_fan_out_switch_trains(world):
    graph, features, _ = world
    result = hgnn.train(graph, features, replace(FAST, per_relation_fanout=False, max_epochs=3))
    assert torch.isfinite(result.embeddings).all()
    assert result.model_state["config"]["per_relation_fanout"] is False


def test_features_must_match_the_nodes(world):
    graph, features, _ = world
    with pytest.raises(ValueError, match="num_nodes"):
        hgnn.train(graph, features[:-1], FAST)


def test_positions_place_items_by_their_listeners_where_text_says_nothing():
    edges, nodes, features, community = planted(noise=0.0)
    graph = build_graph(edges, nodes)
    noise = torch.randn(features.shape, generator=torch.Generator().manual_seed(1))  # text unrelated to community
    connected = graph.union.degree() > 0
    text_only = hgnn.train(graph, noise, FAST)
    placed = hgnn.train(graph, noise, replace(FAST, positional_dim=8))
    _, _, auc_text = separation(text_only.embeddings[connected], community[connected])
    _, _, auc_placed = separation(placed.embeddings[connected], community[connected])
    assert auc_placed > auc_text + 0.02 and auc_placed > 0.75  # 0.76 against 0.73 with seed 0
    # the positions are part of the model's input: text followed by positions reproduces the embeddings
    inputs = torch.cat([noise, placed.positions], dim=1)
    assert placed.positions.shape == (graph.num_nodes, 8)
    assert torch.allclose(hgnn.embed(placed.model_state, graph, inputs), placed.embeddings, atol=1e-6)
    with pytest.raises(ValueError, match="positions"):
        hgnn.embed(placed.model_state, graph, noise)


def test_spectral_positions_are_unit_rows_zero_for_isolated_items_and_repeatable(world):
    graph, _, community = world
    positions = spectral_positions(graph, 6, seed=3)
    degree = graph.union.degree()
    assert positions.shape == (graph.num_nodes, 6) and torch.isfinite(positions).all()
    assert torch.allclose(positions[degree > 0].norm(dim=1), torch.ones(int((degree > 0).sum())), atol=1e-5)
    assert (positions[degree == 0] == 0).all() and int((degree == 0).sum()) == 2
    assert torch.equal(positions, spectral_positions(graph, 6, seed=3))
    _, _, auc = separation(positions[degree > 0], community[degree > 0])
    assert auc > 0.9  # the leading singular vectors alone separate the planted communities
    assert spectral_positions(graph, 0).shape == (graph.num_nodes, 0)
