"""2T-HGNN item encoder: heterogeneous GraphSAGE (max-pool per relation) trained by link prediction."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import MessagePassing

from models.graph import ItemGraph
from models.positional import spectral_positions
from models.sampler import NeighbourSampler, epoch_edges, sample_hop, split_edges
from models.torch_threads import torch_threads


@dataclass
class HGNNConfig:
    hidden_dim: int = 128  # the paper gives no sizes; 128 is the two-tower output width
    out_dim: int = 128
    fanouts: tuple[int, ...] = (10, 10)  # f_r per hop for every relation; one hop per layer (paper: 2)
    relation_fanouts: dict[str, tuple[int, ...]] = field(default_factory=dict)  # per-relation overrides
    per_relation_fanout: bool = True  # sampler (a); False: one shared fan-out of sum(f_r) over all relations
    balanced: bool = True  # sampler (b); False: every training edge every epoch (paper's ablation A)
    negatives: int = 5  # k uniform negatives per anchor; the paper does not say how many
    # Share of seeds embedded without their neighbours in training (not in the paper): items with no
    # edges, such as new releases, are then embedded from their text by a self path trained for it.
    isolate_fraction: float = 0.1
    # Not in the paper: this many leading singular vectors of the training graph's normalised adjacency
    # join the text as node features (models.positional), so items on one topic but with other listeners
    # stay apart (bench/README.md has the ablation). 0: text only.
    positional_dim: int = 32
    margin: float = 0.5  # Δ of the hinge; scores are dot products of unit vectors, in [-1, 1]
    lr: float = 2e-3  # paper: 1e-3 at batch 256; raised with the batch
    # Supervision edges per step. The paper's 256 / 50 epochs / patience 10 are sized for a GPU; a nightly
    # run on 2 CPU cores takes larger steps and at most 8 epochs, and stops after 3 without improvement
    # (the validation loss is noisy from one epoch to the next, so fewer stale epochs stop too early).
    # A step's subgraph covers much of the graph whatever the batch (31,800 of 50,000 nodes at 1M users),
    # so doubling the batch nearly halves an epoch: at 1M users 2048 / 2e-3 trained in 499 s against 1024 /
    # 1e-3's 1,364 s, validation loss 0.1966 against 0.2013 (bench/README.md, "hgnn.py").
    batch_size: int = 2048
    # Supervision edges per epoch at most, a fresh uniform sample of the (balanced) epoch each time
    # (0 = all): bounds an epoch's time on large graphs.
    max_epoch_edges: int = 200_000
    max_epochs: int = 8
    patience: int = 3
    valid_fraction: float = 0.1  # paper: 10% of the training edges, held out per relation
    infer_fanouts: tuple[int, ...] | None = None  # None: every neighbour at inference (exact, no sampling noise)
    infer_chunk: int = 8192  # target nodes per step at inference; bounds memory on large graphs
    # torch threads while training/embedding, restored after; None leaves torch's setting (every core, unless
    # OMP_NUM_THREADS says otherwise). The step runs alone in the warehouse pool, where 2 threads on 2 cores
    # train 1.8x faster at 1M users and 1.5x on the demo; cores shared with other processes run far faster
    # on 1 (threads then wait on each other), so set 1 where the HGNN shares its cores.
    num_threads: int | None = None
    seed: int = 0


class DenseMax(torch.autograd.Function):
    """out[t] = max_j messages[table[t, j]] elementwise, for a (T, width) neighbour table.

    Keeps only the winning row per (target, feature), so the backward is one (T, d) scatter instead
    of autograd's pass over (T, width, d): on CPU this pooling runs about 3x faster than scatter-max.
    The table's padding points at a zero row; messages come out of a ReLU (>= 0), so padding never
    changes a max.
    """

    @staticmethod
    def forward(ctx: Any, messages: Tensor, table: Tensor) -> Tensor:
        padded = messages.index_select(0, table.flatten()).view(*table.shape, -1)  # (T, width, d)
        out, column = padded.max(dim=1)  # (T, d) each
        ctx.save_for_backward(table.gather(1, column))  # (T, d) row of messages behind each maximum
        ctx.num_rows = messages.shape[0]
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (winner,) = ctx.saved_tensors
        return grad.new_zeros(ctx.num_rows, grad.shape[1]).scatter_add_(0, winner, grad), None


class RelationMaxPool(MessagePassing):
    """Elementwise max of each target's neighbour messages; a target without neighbours gets zeros.

    With gradients on, the neighbours are laid out as a (targets, fan-out) table for DenseMax, whose
    backward is cheap; inference, where degrees are unbounded, uses PyG's scatter-max.
    """

    def __init__(self) -> None:
        super().__init__(aggr="max")

    def forward(self, messages: Tensor, edge_index: Tensor, num_targets: int) -> Tensor:
        if not torch.is_grad_enabled():
            return self.propagate(edge_index, x=(messages, None), size=(messages.shape[0], num_targets))
        source, target = edge_index
        counts = torch.bincount(target, minlength=num_targets)  # (T,)
        order = torch.argsort(target, stable=True)
        rank = torch.arange(target.numel()) - (torch.cumsum(counts, 0) - counts)[target[order]]
        table = torch.full((num_targets, int(counts.max())), messages.shape[0])  # padding -> the zero row
        table[target[order], rank] = source[order]
        return DenseMax.apply(torch.cat([messages, messages.new_zeros(1, messages.shape[1])]), table)  # (T, d)


class HeteroSAGELayer(nn.Module):
    """h_c' = W_c h_c + sum_r max_{c' in N(c,r)} relu(W_r h_c' + b_r)  (paper Eqs. 1-3, before σ)."""

    def __init__(self, in_dim: int, out_dim: int, relations: list[str]) -> None:
        super().__init__()
        self.neighbour = nn.ModuleDict({r: nn.Linear(in_dim, out_dim) for r in relations})  # W_r, b_r
        self.root = nn.Linear(in_dim, out_dim)  # one self transform, shared by every node type
        self.pool = RelationMaxPool()

    def forward(self, x_source: Tensor, x_target: Tensor, edge_index: dict[str, Tensor],
                messages: dict[str, Tensor] | None = None) -> Tensor:
        """Edges: row 0 indexes x_source, row 1 x_target; `messages` (r -> (N_src, d)) may be precomputed."""
        out = self.root(x_target)  # (T, out)
        for r, e in edge_index.items():
            if r not in self.neighbour or e.shape[1] == 0:
                continue
            if messages is not None:
                message, source = messages[r], e[0]
            else:
                # The neighbour MLP reads only the neighbour: run it once per sending node, not per edge.
                senders, source = torch.unique(e[0], return_inverse=True)
                message = F.relu(self.neighbour[r](x_source[senders]))  # (n_r, out)
            out = out + self.pool(message, torch.stack([source, e[1]]), x_target.shape[0])
        return out


class HGNN(nn.Module):
    def __init__(self, in_dim: int, relations: list[str], config: HGNNConfig) -> None:
        super().__init__()
        self.in_dim, self.relations, self.config = in_dim, list(relations), config
        dims = [in_dim] + [config.hidden_dim] * (len(config.fanouts) - 1) + [config.out_dim]
        self.layers = nn.ModuleList(HeteroSAGELayer(a, b, self.relations) for a, b in zip(dims, dims[1:]))

    def forward(self, x: Tensor, layer_inputs: list[tuple[int, dict[str, Tensor]]]) -> Tensor:
        """x (n, in_dim) for every subgraph node; per layer (targets, edges) as Subgraph.layer_inputs gives.
        Returns (targets of the last layer, out_dim) unit vectors."""
        h = x
        for i, (layer, (num_targets, edge_index)) in enumerate(zip(self.layers, layer_inputs)):
            h = layer(h, h[:num_targets], edge_index)
            # No ReLU after the last layer: it would confine the unit vectors to the positive orthant.
            h = F.relu(h) if i < len(self.layers) - 1 else h
        return F.normalize(h, dim=-1)


@dataclass
class HGNNResult:
    embeddings: Tensor  # (N, out_dim) unit vectors, row i = graph node i (every item, edges or not)
    nodes: pl.DataFrame  # item_id, item_type, node_id
    curve: list[dict[str, float]]  # per epoch: train_loss, valid_loss, valid_auc, train_edges, seconds
    best_epoch: int
    timings: dict[str, float]  # seconds: split, train, valid, embed, total
    edge_counts: dict[str, int]
    edge_counts_markdown: str
    model_state: dict[str, Any]  # checkpoint: config, relations, in_dim, state_dict
    positions: Tensor  # (N, positional_dim) graph positions appended to the features (models.positional)

    def embeddings_frame(self) -> pl.DataFrame:
        """item_id, item_type, embedding (list of float32): the rows of models.hgnn_item_embeddings."""
        vectors = pl.Series("embedding", self.embeddings.numpy()).cast(pl.List(pl.Float32))
        return self.nodes.select("item_id", "item_type").with_columns(vectors)


def hinge_loss(z_anchor: Tensor, z_positive: Tensor, z_negative: Tensor, margin: float) -> Tensor:
    """mean of max(0, z_a·z_n - z_a·z_p + Δ) over anchors and their negatives; z_negative is (B, k, d)."""
    positive = (z_anchor * z_positive).sum(-1, keepdim=True)  # (B, 1)
    negative = torch.einsum("bd,bkd->bk", z_anchor, z_negative)  # (B, k)
    return F.relu(negative - positive + margin).mean()


def train(
    graph: ItemGraph, features: Tensor, config: HGNNConfig | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> HGNNResult:
    """Train on the graph's edges (10% held out per relation) and embed every node of the graph.

    on_epoch, if given, is called with each epoch's curve row as soon as that epoch is validated
    (progress reports; the reliability tests pause a run there to kill it).
    """
    config = config or HGNNConfig()
    with torch_threads(config.num_threads):
        return _train(graph, _check_features(graph, features), config, on_epoch)


def _train(
    graph: ItemGraph, features: Tensor, config: HGNNConfig, on_epoch: Callable[[dict[str, float]], None] | None,
) -> HGNNResult:
    if min(config.fanouts, default=0) < 1 or len(config.infer_fanouts or config.fanouts) != len(config.fanouts):
        raise ValueError(f"fanouts need one value >= 1 per layer (got {config.fanouts}); infer_fanouts, if set, "
                         f"one per layer too, where -1 takes every neighbour (got {config.infer_fanouts})")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    train_edges, valid_edges = split_edges(graph, config.valid_fraction, generator)
    if not any(e.shape[1] for e in train_edges.values()):
        raise ValueError(f"no training edges (edge counts {graph.edge_counts()}); lower min_co_listeners, "
                         "widen the window or keep more relations")
    train_graph = graph.with_edges(train_edges)  # validation edges stay out of message passing
    # Positions from the training edges only, so validation edges do not leak into node features.
    positions = spectral_positions(train_graph, config.positional_dim, config.seed)
    text_width = features.shape[1]
    features = torch.cat([features, positions], dim=1)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(config.seed)
        model = HGNN(features.shape[1], list(graph.relations), config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    sampler = NeighbourSampler(train_graph, config.fanouts, generator, config.per_relation_fanout,
                               config.relation_fanouts)
    valid_pairs = torch.cat([e.T for e in valid_edges.values()])  # (V, 2)
    valid_negatives = torch.randint(graph.num_nodes, (valid_pairs.shape[0], config.negatives), generator=generator)
    timings = {"split": time.perf_counter() - started, "train": 0.0, "valid": 0.0}

    curve: list[dict[str, float]] = []
    best_score, best_epoch, best_state, stale = float("inf"), 0, copy.deepcopy(model.state_dict()), 0
    for epoch in range(1, config.max_epochs + 1):
        tick = time.perf_counter()
        pairs, _ = epoch_edges(train_edges, config.balanced, generator, config.max_epoch_edges)
        model.train()
        total, steps = 0.0, 0
        for start in range(0, pairs.shape[0], config.batch_size):
            batch = pairs[start:start + config.batch_size]  # (B, 2) anchor, positive
            b = batch.shape[0]
            negatives = torch.randint(graph.num_nodes, (b * config.negatives,), generator=generator)
            # Every anchor, positive and negative is embedded with its own sampled neighbourhood.
            seeds = torch.cat([batch[:, 0], batch[:, 1], negatives])
            isolated = seeds[torch.rand(seeds.numel(), generator=generator) < config.isolate_fraction]
            sub = sampler.sample(seeds, isolated)
            x = features[sub.node_ids]
            if positions.shape[1] and isolated.numel():  # as a new item without edges: text alone
                x[torch.isin(sub.node_ids, isolated), text_width:] = 0.0
            z = model(x, sub.layer_inputs())[sub.seed_index]  # (B * (2 + k), d)
            loss = hinge_loss(z[:b], z[b:2 * b], z[2 * b:].view(b, config.negatives, -1), config.margin)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, steps = total + loss.item(), steps + 1
        train_seconds = time.perf_counter() - tick
        timings["train"] += train_seconds

        tick = time.perf_counter()
        z_all = _embed(model, train_graph, features)
        valid_loss, valid_auc = _link_scores(z_all, valid_pairs, valid_negatives, config.margin)
        timings["valid"] += time.perf_counter() - tick
        train_loss = total / max(steps, 1)
        curve.append({"epoch": epoch, "train_loss": train_loss, "valid_loss": valid_loss, "valid_auc": valid_auc,
                      "train_edges": int(pairs.shape[0]), "seconds": train_seconds})
        if on_epoch is not None:
            on_epoch(curve[-1])
        # A graph too small to hold out any edge stops on the training loss instead.
        score = valid_loss if valid_pairs.shape[0] else train_loss
        if score < best_score:
            best_score, best_epoch, best_state, stale = score, epoch, copy.deepcopy(model.state_dict()), 0
        else:
            stale += 1
            if stale >= config.patience:
                break

    model.load_state_dict(best_state)
    tick = time.perf_counter()
    embeddings = _embed(model, graph, features)  # the full graph: validation edges inform inference
    timings["embed"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started
    return HGNNResult(embeddings, graph.nodes, curve, best_epoch, timings, graph.edge_counts(),
                      graph.edge_counts_markdown(), checkpoint(model), positions)


def embed(model: HGNN | dict[str, Any], graph: ItemGraph, features: Tensor) -> Tensor:
    """Unit vectors for every node of `graph` (N, out_dim), layer by layer over all nodes.

    Inductive: the graph and features may hold items never seen in training; an item without edges
    embeds from its own features. Graph relations the model was not trained on are ignored. A model
    trained with positional_dim > 0 takes the text features followed by the training's positions
    (HGNNResult.positions); items the training graph did not hold get zeros there.
    """
    model = model_from_checkpoint(model) if isinstance(model, dict) else model
    features = _check_features(graph, features)
    if features.shape[1] != model.in_dim:
        raise ValueError(f"features have {features.shape[1]} columns, the model was trained on {model.in_dim}; "
                         "embed with the same text-embedding model, followed by the training's positions "
                         f"({model.config.positional_dim} columns, HGNNResult.positions) when it used them")
    with torch_threads(model.config.num_threads):
        return _embed(model, graph, features)


@torch.no_grad()
def _embed(model: HGNN, graph: ItemGraph, features: Tensor) -> Tensor:
    config = model.config
    fanouts = config.infer_fanouts or (-1,) * len(model.layers)
    relations = [r for r in model.relations if r in graph.relations]
    generator = torch.Generator().manual_seed(config.seed)
    every = torch.arange(graph.num_nodes)
    h = features
    for i, layer in enumerate(model.layers):
        hop_fanouts = {r: fanouts[i] for r in relations}
        hop = sample_hop(graph, every, hop_fanouts, config.per_relation_fanout, generator)
        hop = {r: e[:, torch.argsort(e[1], stable=True)] for r, e in hop.items()}  # by target, for chunking
        messages = {r: F.relu(layer.neighbour[r](h)) for r in hop}  # r -> (N, d), shared by every chunk
        out = torch.empty((graph.num_nodes, layer.root.out_features))
        for start in range(0, graph.num_nodes, config.infer_chunk):
            stop = min(start + config.infer_chunk, graph.num_nodes)
            chunk_edges = {}
            for r, e in hop.items():
                lo, hi = torch.searchsorted(e[1], torch.tensor([start, stop])).tolist()
                chunk_edges[r] = torch.stack([e[0, lo:hi], e[1, lo:hi] - start])
            out[start:stop] = layer(h, h[start:stop], chunk_edges, messages)
        h = F.relu(out) if i < len(model.layers) - 1 else out
    return F.normalize(h, dim=-1)


def checkpoint(model: HGNN) -> dict[str, Any]:
    """Everything needed to rebuild the model: plain types only, so torch.load(weights_only=True) reads it."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"config": asdict(model.config), "relations": list(model.relations), "in_dim": model.in_dim,
            "state_dict": state}


def model_from_checkpoint(state: dict[str, Any]) -> HGNN:
    config = HGNNConfig(**state["config"])
    model = HGNN(state["in_dim"], state["relations"], config)
    model.load_state_dict(state["state_dict"])
    return model


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    torch.save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    return torch.load(path, weights_only=True)


def _link_scores(z: Tensor, pairs: Tensor, negatives: Tensor, margin: float) -> tuple[float, float]:
    """Hinge loss and AUC (share of negatives scored below the positive) of held-out edges."""
    if pairs.shape[0] == 0:
        return float("nan"), float("nan")
    anchor, positive, negative = z[pairs[:, 0]], z[pairs[:, 1]], z[negatives]  # (V, d), (V, d), (V, k, d)
    pos = (anchor * positive).sum(-1, keepdim=True)  # (V, 1)
    neg = torch.einsum("vd,vkd->vk", anchor, negative)  # (V, k)
    auc = ((pos > neg).float() + 0.5 * (pos == neg).float()).mean().item()
    return hinge_loss(anchor, positive, negative, margin).item(), auc


def _check_features(graph: ItemGraph, features: Tensor) -> Tensor:
    if features.dim() != 2 or features.shape[0] != graph.num_nodes:
        raise ValueError(f"features must be (num_nodes={graph.num_nodes}, dim), one row per node frame row "
                         f"(got {tuple(features.shape)})")
    features = features.float()
    if not torch.isfinite(features).all():
        raise ValueError(f"features hold {int((~torch.isfinite(features)).sum())} non-finite values; "
                         "re-embed the items' text")
    return features
