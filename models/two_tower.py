"""Two-tower model of 2T-HGNN: users and target-type items mapped to one space and scored by dot product.

Training pairs (the 2T-HGNN paper leaves the positive label open): the user tower reads each warm user's
history over `periods` with part of their target-type items hidden, and the hidden items are the
labels. Per user, with probability `cold_example_rate` every target-type item is hidden, so the
example looks exactly like a cold user at evaluation time (podcasts, music, demographics, no
audiobooks) and the tower learns to cross over; otherwise each item is hidden with probability
`label_fraction`, and always at least one. A hidden item disappears from the features entirely
(plays and weak signals), so nothing about a label leaks into its own input. The mask is drawn
from `seed + epoch`, afresh every epoch unless `redraw_labels` is off: few warm users then still
give many distinct examples. Random hiding rather than a time cut inside the window keeps every
warm user's items usable as labels on short windows and sets the share of cold-like examples
directly. Positives include weak-signal items (follow, save, preview, purchase) unless
`use_weak_signals` is off (ablation B: weak-only items leave features and labels alike).

Podcasts are labels too (`label_types`): nearly every user has some, so the user tower learns from
the whole population rather than the few warm users alone, and podcast and audiobook items share
the HGNN space the item tower reads. Negatives stay within the positive's type, and target-type
labels carry `target_label_weight` of the loss. On the 2000-user sample world this lifted cold
HR@10 from about 0.71 to 0.76 and warm from 0.26 to 0.30 at 10 epochs.

User tower: the paper's inputs (demographics, music taste as the mean text embedding of played
music, mean HGNN embedding per graph type and of weakly signalled items, activity counts, profile
embedding) plus its "interaction features given as lists of embeddings": learned embeddings of the
user's most-played items per type, mean-pooled (`history_bag_dim`, 0 turns them off).

Item tower: language, genres, text embedding, HGNN embedding (the paper's) and, unless
`use_popularity` is off, the item's reach over the history (crossfade's addition: without an item
id the tower cannot otherwise tell a hit from an obscure title once logQ removes the frequency bias).

History factor (`history_factor_rank`, models/history_factors.py): EASE's weights onto the label items,
fitted on the training history (the pipeline passes the regularization validation chose for EASE,
models.evaluate.factors_as_ease) and cut to rank r, give each user a factor (summed over their history
items, labels hidden as for every other input) and each label item a factor. Both ride beside the towers'
unit outputs, the user's weighted by one learned scale, so a dot product scores cosine + scale x the
closed form's score and the towers learn the rest. On the demo world's validation this moved 2T-HGNN's
HR@10 from 0.54 to 0.60-0.63 over all users and from 0.74-0.76 to 0.80-0.82 on cold users (two seeds;
bench/README.md, "History factors").

Topics (FeatureFrames.item_topics, enrich.item_topics' `topics`: the LLM's where they passed their
quality floor, else the taxonomy's or zero-shot's), unless `use_topics` is off: the item tower reads
a topic multi-hot, the user tower the share of their history items carrying each topic. The topic
vocabulary is fixed at training and saved with the model; an item without topics reads zeros.

Loss: in-batch sampled softmax over unit-length tower outputs with temperature, each logit
corrected by the log of its item's frequency among the labels (logQ, Yi et al. 2019), the usual
reading of the paper's Eq. 5. In-batch columns that are positives of the row's user are masked.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import nn

from models.history_factors import HistoryFactors
from models.recommender import FeatureFrames, VectorRecommender, consumed_pairs, embedding_table, positions
from models.tower_inputs import Table, TowerInputs, Vocabularies, item_inputs, item_popularity, user_inputs

USER_CHUNK = 100_000  # users whose inputs are built and encoded at once (about 0.5 GB of inputs)


@dataclass(frozen=True)
class TwoTowerConfig:
    # The pipeline's types, from settings (warehouse/settings.py holds their defaults).
    target_type: str
    graph_types: tuple[str, ...]  # the item types the HGNN embeds
    item_types: tuple[str, ...]
    music_type: str = "music"  # mean text embedding of its played items = music taste (music is not in the graph)
    periods: tuple[str, ...] = ("train",)  # history the user tower reads; serving may add "holdout"
    use_hgnn: bool = True  # False = the paper's 2T baseline: text embeddings take the HGNN's place
    use_weak_signals: bool = True  # False = ablation B
    use_profile: bool = True  # off anyway when no profile embeddings are given to fit
    use_popularity: bool = True  # item tower also reads how many users touched the item (not in the paper)
    use_topics: bool = True  # topic multi-hot (items) and topic shares (users); off anyway without item topics
    max_topics: int = 64  # topic vocabulary width; rarer topics (an LLM's free answers) count as none
    # Item types whose items are training labels (the target type always is). Podcast labels come from
    # nearly every user, not only the few warm ones, and teach the user tower how listening maps onto
    # the HGNN space the audiobooks share; each row's in-batch negatives are of its positive's type.
    label_types: tuple[str, ...] | None = None  # None: every graph type
    target_label_weight: float = 0.3  # share of the loss on target-type labels when other types are labels too
    # Learned embeddings of the items in each user's history, mean-pooled per item type (0 = off).
    history_bag_dim: int = 32
    history_bag_length: int = 32  # most-played items per user and type that the pool reads
    max_history_items: int = 200_000  # vocabulary: the items most users touched; the rest have no embedding
    # Learned embedding of the item itself in the item tower, for items in the history vocabulary (0 = off);
    # items new since training (fresh releases) read row 0 and rely on their features. Off by default:
    # per-item parameters need many interactions per item, which the target type rarely has.
    item_id_dim: int = 0
    # EASE's weights onto the label items cut to this rank (models/history_factors.py): a user factor and
    # an item factor carried beside the towers' outputs, their dot product weighted by a learned scale
    # (0 = off). The towers then learn what the closed form misses instead of all of co-listening.
    history_factor_rank: int = 256
    history_factor_regularization: float = 500.0  # EASE's lambda for the factors (the pipeline: EASE's validated one)
    history_factor_max_items: int = 20_000  # history items the factors read, most users first
    history_factor_scale: float = 1.0  # the learned scale's start (the factors' scores have unit rms on the labels)
    # At inference the factor part of each user vector (learned scale x factor) is multiplied by this: training
    # leaves the closed form's share low (the towers learn against it), validation picks a larger one
    # (models.protocol.FACTOR_WEIGHTS; bench/README.md, "The history factor's weight"). Training ignores it.
    history_factor_weight: float = 1.0
    hidden: tuple[int, ...] = (512, 256, 128)  # per tower; the last is the output dimension
    categorical_dim: int = 16  # width of the age, country and language embeddings
    max_genres: int = 64  # genre multi-hot width; rarer genres count as unknown
    label_fraction: float = 0.5
    cold_example_rate: float = 0.3
    redraw_labels: bool = True  # a fresh mask every epoch: more distinct examples from few warm users
    # Users whose examples one epoch trains on, drawn afresh each epoch (0 = all): bounds an epoch's time
    # and memory on a large population; the vocabulary, popularity and logQ still read every user.
    max_users_per_epoch: int = 20_000
    # Items drawn uniformly for each batch as extra negatives beside the in-batch ones (mixed negative
    # sampling, Yang et al. 2020); every logit is corrected by the log of its item's expected count in
    # the mixture. 0: in-batch negatives alone, the default: extra negatives double the training time
    # for a gain within the seed-to-seed spread (bench/README.md has the measurement).
    uniform_negatives: int = 0
    temperature: float = 0.05  # outputs are unit vectors: cosines need sharpening before the softmax
    dropout: float = 0.1
    batch_size: int = 256
    epochs: int = 20  # passes over the sampled users; bounded so a nightly run trains in minutes on 2 cores
    lr: float = 1e-3
    seed: int = 0


class TwoTowerNet(nn.Module):
    def __init__(self, config: TwoTowerConfig, vocab: Vocabularies, user_dim: int, item_dim: int,
                 factor_rank: int = 0) -> None:
        """`user_dim` and `item_dim` count the dense inputs, the last `factor_rank` of which are history factors."""
        super().__init__()
        self.factor_rank = factor_rank
        self.factor_scale = nn.Parameter(torch.tensor(config.history_factor_scale)) if factor_rank else None
        user_dim, item_dim = user_dim - factor_rank, item_dim - factor_rank
        e = config.categorical_dim
        self.age = nn.Embedding(len(vocab.age_bucket) + 1, e)
        self.country = nn.Embedding(len(vocab.country) + 1, e)
        self.language = nn.Embedding(len(vocab.language) + 1, e)
        b = config.history_bag_dim if vocab.history_item else 0
        self.history = nn.Embedding(len(vocab.history_item) + 1, b, padding_idx=0) if b else None
        self.user_mlp = _mlp(2 * e + user_dim + b * len(config.item_types), config.hidden, config.dropout)
        d = config.item_id_dim if vocab.history_item else 0
        self.item_id = nn.Embedding(len(vocab.history_item) + 1, d, padding_idx=0) if d else None
        self.item_mlp = _mlp(e + item_dim + d, config.hidden, config.dropout)

    def users(self, categorical: torch.Tensor, dense: torch.Tensor, bags: torch.Tensor | None = None) -> torch.Tensor:
        dense, factor = self._split(dense)
        parts = [self.age(categorical[:, 0]), self.country(categorical[:, 1]), dense]  # (B, e), (B, e), (B, Du)
        if self.history is not None:
            rows = bags.long()  # (B, T, L)
            pooled = self.history(rows).sum(2) / (rows > 0).sum(2, keepdim=True).clamp(min=1)  # (B, T, b)
            parts.append(pooled.flatten(1))  # (B, T * b)
        out = F.normalize(self.user_mlp(torch.cat(parts, dim=1)), dim=1)  # (B, out)
        return out if factor is None else torch.cat([out, self.factor_scale * factor], dim=1)  # (B, out + r)

    def items(self, categorical: torch.Tensor, dense: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        dense, factor = self._split(dense)
        parts = [self.language(categorical[:, 0]), dense]  # (B, e), (B, Di)
        if self.item_id is not None:
            parts.append(self.item_id(rows[:, 0, 0].long()))  # (B, d)
        x = torch.cat(parts, dim=1)  # (B, e + Di + d)
        out = F.normalize(self.item_mlp(x), dim=1)  # (B, out)
        return out if factor is None else torch.cat([out, factor], dim=1)  # (B, out + r)

    def _split(self, dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(the towers' own dense inputs, the history factors or None)."""
        r = self.factor_rank
        return (dense[:, :-r], dense[:, -r:]) if r else (dense, None)


def _mlp(width: int, hidden: tuple[int, ...], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, out in enumerate(hidden):
        layers.append(nn.Linear(width, out))
        if i < len(hidden) - 1:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        width = out
    return nn.Sequential(*layers)


@dataclass
class TwoTowerModel:
    config: TwoTowerConfig
    vocab: Vocabularies
    dims: dict[str, int]  # text, hgnn, profile (0 = not used), user_dense, item_dense
    net: TwoTowerNet
    losses: list[float] = field(default_factory=list)  # mean training loss per epoch
    seconds: float = 0.0
    factors: HistoryFactors | None = None  # with config.history_factor_rank

    def user_vectors(self, frames: FeatureFrames, text_embeddings: pl.DataFrame,
                     hgnn_embeddings: pl.DataFrame | None = None, profile_embeddings: pl.DataFrame | None = None,
                     user_ids: pl.Series | None = None) -> tuple[pl.Series, torch.Tensor]:
        """(ids, (U, out) unit vectors) for `user_ids` (default: every user in user_stats) from their whole
        history over `config.periods`; users with no history still get a vector."""
        text, graph, _, profile = self._tables(text_embeddings, hgnn_embeddings, profile_embeddings)
        ids = (frames.user_stats["user_id"] if user_ids is None else user_ids).cast(pl.String)
        history = frames.history(self.config.periods, self.config.use_weak_signals)
        # A chunk of users at a time: the inputs of a million users (about 1,200 floats each) would not fit.
        vectors = []
        for start in range(0, ids.len(), USER_CHUNK):
            chunk = ids.slice(start, USER_CHUNK)
            rows = history.join(chunk.to_frame("user_id"), on="user_id", how="semi")
            inputs = _user_inputs(chunk, rows, frames, self.config, self.vocab, self.dims["profile"], text, graph,
                                  profile, self.factors)
            vectors.append(weighted_factors(self._encode(self.net.users, inputs), self.config.hidden[-1],
                                            self.config.history_factor_weight))  # a chunk's copy, not all users'
        return ids, torch.cat(vectors) if vectors else torch.zeros(0, self._width())

    def item_vectors(self, frames: FeatureFrames, text_embeddings: pl.DataFrame,
                     hgnn_embeddings: pl.DataFrame | None = None,
                     item_ids: pl.Series | None = None) -> tuple[pl.Series, torch.Tensor]:
        """(ids, (I, out) unit vectors) for `item_ids` (default: every target-type item in raw.items)."""
        text, _, hgnn, _ = self._tables(text_embeddings, hgnn_embeddings, None)
        ids = _target_items(frames, self.config.target_type) if item_ids is None else item_ids
        history = frames.history(self.config.periods, self.config.use_weak_signals)
        popularity = item_popularity(_target_items(frames, self.config.target_type), history)
        inputs = item_inputs(ids, frames.items, self.vocab, text, hgnn, self.dims["hgnn"],
                             popularity if self.config.use_popularity else None, self.config.item_id_dim > 0,
                             frames.item_topics)
        return inputs.ids, self._encode(self.net.items, _with_item_factors(inputs, self.factors))

    def recommender(self, frames: FeatureFrames, candidates: pl.Series, text_embeddings: pl.DataFrame,
                    hgnn_embeddings: pl.DataFrame | None = None,
                    profile_embeddings: pl.DataFrame | None = None,
                    user_ids: pl.Series | None = None) -> VectorRecommender:
        """`user_ids` (default: every user in user_stats) against `candidates`; consumed = target-type items
        touched in `periods`."""
        users = self.user_vectors(frames, text_embeddings, hgnn_embeddings, profile_embeddings, user_ids)
        items = self.item_vectors(frames, text_embeddings, hgnn_embeddings, candidates)
        history = frames.history(self.config.periods)
        return VectorRecommender(*users, *items, consumed_pairs(history, self.config.target_type))

    def save(self, path: str | Path) -> None:
        torch.save({"config": asdict(self.config), "vocab": self.vocab.to_dict(), "dims": self.dims,
                    "state": self.net.state_dict(), "losses": self.losses, "seconds": self.seconds,
                    "factors": None if self.factors is None else self.factors.to_dict()}, path)

    @staticmethod
    def load(path: str | Path) -> TwoTowerModel:
        saved = torch.load(path, weights_only=True)
        config = TwoTowerConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()})
        vocab = Vocabularies(**saved["vocab"])
        factors = HistoryFactors.from_dict(saved["factors"]) if saved.get("factors") else None
        net = TwoTowerNet(config, vocab, saved["dims"]["user_dense"], saved["dims"]["item_dense"],
                          saved["dims"].get("factor", 0))
        net.load_state_dict(saved["state"])
        return TwoTowerModel(config, vocab, saved["dims"], net, saved["losses"], saved["seconds"], factors)

    def _tables(self, text_embeddings: pl.DataFrame, hgnn_embeddings: pl.DataFrame | None,
                profile_embeddings: pl.DataFrame | None) -> tuple[Table, Table, Table | None, Table | None]:
        """Text, user-side graph table (HGNN, or text without HGNN), item-side HGNN table, profile table."""
        tables = _tables(self.config, text_embeddings, hgnn_embeddings,
                         profile_embeddings if self.dims["profile"] else None)
        for name, table in (("text", tables[0]), ("hgnn", tables[2])):
            if table is not None and table[1].shape[1] != self.dims[name]:
                raise ValueError(f"{name} embeddings have dimension {table[1].shape[1]}, the model was trained on "
                                 f"{self.dims[name]}; pass the embeddings it was trained on or retrain it")
        return tables

    def _width(self) -> int:
        return self.config.hidden[-1] + self.dims.get("factor", 0)

    @torch.no_grad()
    def _encode(self, tower: nn.Module, inputs: TowerInputs, chunk: int = 8192) -> torch.Tensor:
        self.net.eval()
        bags = inputs.bags
        out = [tower(inputs.categorical[s:s + chunk], inputs.dense[s:s + chunk],
                     *(() if bags is None else (bags[s:s + chunk],)))
               for s in range(0, inputs.ids.len(), chunk)]
        return torch.cat(out) if out else torch.zeros(0, self._width())


def weighted_factors(user_vectors: torch.Tensor, tower_width: int, weight: float) -> torch.Tensor:
    """`user_vectors` with their history-factor columns (after the towers' `tower_width`) times `weight`."""
    if weight == 1.0 or user_vectors.shape[1] <= tower_width:
        return user_vectors
    return torch.cat([user_vectors[:, :tower_width], user_vectors[:, tower_width:] * weight], dim=1)


def with_factor_weight(recommender: VectorRecommender, tower_width: int, weight: float) -> VectorRecommender:
    """A 2T-HGNN recommender's lists with its user vectors' factor part times `weight` (no refit)."""
    return replace(recommender, user_vectors=weighted_factors(recommender.user_vectors, tower_width, weight))


def fit(frames: FeatureFrames, config: TwoTowerConfig, *, text_embeddings: pl.DataFrame,
        hgnn_embeddings: pl.DataFrame | None = None,
        profile_embeddings: pl.DataFrame | None = None) -> TwoTowerModel:
    """Train on the history of `config.periods` (see the module docstring for labels and loss)."""
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    text, graph, hgnn, profile = _tables(config, text_embeddings, hgnn_embeddings,
                                         profile_embeddings if config.use_profile else None)
    dims = {"text": text[1].shape[1], "hgnn": hgnn[1].shape[1] if hgnn else 0,
            "profile": profile[1].shape[1] if profile else 0}
    types = _label_types(config)
    history = frames.history(config.periods, config.use_weak_signals)
    vocab = Vocabularies.build(frames.user_stats, frames.items, types, config.max_genres, history,
                               config.max_history_items if config.history_bag_dim or config.item_id_dim else 0,
                               frames.item_topics if config.use_topics else None, config.max_topics)
    targets = _items_of(frames, types)
    factors = (HistoryFactors.fit(history, targets, config.history_factor_rank, config.history_factor_regularization,
                                  config.history_factor_max_items, config.seed)
               if config.history_factor_rank else None)
    dims["factor"] = factors.rank if factors else 0
    items = _with_item_factors(item_inputs(targets, frames.items, vocab, text, hgnn, dims["hgnn"],
                                           _popularity(frames, types, history) if config.use_popularity else None,
                                           config.item_id_dim > 0, frames.item_topics), factors)
    item_type = _type_codes(targets, frames.items, types)  # (I,) index into `types`
    pairs = (history.filter(pl.col("item_type").is_in(types)).select("user_id", "item_id").unique()
             .join(positions(items.ids, "item_id"), on="item_id"))
    if pairs.height == 0:
        raise ValueError(f"no user has an item of the label types {list(types)} in periods {config.periods}; "
                         "the two-tower model needs some history to learn from")
    # No warm user (no target-type label) still trains: the other label types place users and items in the
    # one space the target items' text and HGNN vectors share; the registered slices show warm is empty.
    # Every user-item pair is a label in some draw, so the label frequency is the pair frequency.
    frequency = torch.bincount(pairs["row"].to_torch(), minlength=items.ids.len()).float() / pairs.height
    log_q = frequency.clamp(min=1e-12).log()  # (I,) sampling log-frequency of each item as an in-batch negative

    label_users = pairs["user_id"].unique().sort()

    def draw(epoch: int) -> Examples:
        seen, labels = split_labels(sample_users(history, label_users, config.max_users_per_epoch, config.seed + epoch),
                                    config, config.seed + epoch)
        labels = labels.join(positions(items.ids, "item_id"), on="item_id").rename({"row": "i"})
        users = _user_inputs(labels["user_id"].unique().sort(), seen, frames, config, vocab, dims["profile"],
                             text, graph, profile, factors)
        labels = labels.join(positions(users.ids, "user_id"), on="user_id").rename({"row": "u"}).sort("u", "i")
        return Examples(users, labels["u"].to_torch(), labels["i"].to_torch())

    first = draw(0)
    dims |= {"user_dense": first.users.dense.shape[1], "item_dense": items.dense.shape[1]}
    net = TwoTowerNet(config, vocab, dims["user_dense"], dims["item_dense"], dims["factor"])
    model = TwoTowerModel(config, vocab, dims, net, factors=factors)
    weights = _type_weights(item_type, pairs["row"].to_torch(), types.index(config.target_type), config)
    model.losses = _train(model.net, items, item_type, weights, first, draw, log_q, config)
    model.seconds = time.perf_counter() - started
    return model


@dataclass(frozen=True)
class Examples:
    """One draw of training pairs: user u_rows[n] (a row of `users`) took item i_rows[n]."""

    users: TowerInputs
    u_rows: torch.Tensor  # (N,)
    i_rows: torch.Tensor  # (N,) rows of the item inputs


def sample_users(history: pl.DataFrame, users: pl.Series, limit: int, seed: int) -> pl.DataFrame:
    """`history` of at most `limit` of `users`, drawn without replacement from `seed` (0 or enough: all of it)."""
    if limit < 0:
        raise ValueError(f"max_users_per_epoch must be >= 0 (got {limit})")
    if not limit or users.len() <= limit:
        return history
    chosen = users.sample(limit, seed=seed)
    return history.join(chosen.to_frame("user_id"), on="user_id", how="semi")


def split_labels(history: pl.DataFrame, config: TwoTowerConfig, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(history without the hidden rows, hidden (user_id, item_id) labels); see the module docstring.

    Cold-like examples hide every target-type item; items of the other label types are hidden as in
    any example, each with probability `label_fraction` and at least one per user and type.
    """
    target = (history.filter(pl.col("item_type").is_in(_label_types(config)))
              .select("user_id", "item_id", "item_type").unique().sort("user_id", "item_id"))
    rng = np.random.default_rng(seed)
    users = target.filter(pl.col("item_type") == config.target_type).select("user_id").unique().sort("user_id")
    users = users.with_columns(cold=pl.Series(rng.random(users.height) < config.cold_example_rate))
    draws = (target.with_columns(r=pl.Series(rng.random(target.height)))
             .join(users, on="user_id", how="left").with_columns(pl.col("cold").fill_null(False)))
    is_target = pl.col("item_type") == config.target_type
    labels = draws.filter(
        (pl.col("cold") & is_target) | (pl.col("r") < config.label_fraction)
        | (pl.col("r") == pl.col("r").min().over("user_id", "item_type"))
    ).select("user_id", "item_id")
    return history.join(labels, on=["user_id", "item_id"], how="anti"), labels


def _train(net: TwoTowerNet, items: TowerInputs, item_type: torch.Tensor, weights: torch.Tensor, first: Examples,
           draw: Callable[[int], Examples], log_q: torch.Tensor, config: TwoTowerConfig) -> list[float]:
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    extra, count_items = config.uniform_negatives, items.ids.len()
    # expected times an item is a column of one batch: as some row's positive, and as a uniform draw
    log_count = torch.log(config.batch_size * log_q.exp() + extra / count_items)  # (I,)
    losses = []
    for epoch in range(config.epochs):
        net.train()
        examples = draw(epoch) if epoch and config.redraw_labels else first
        users, u_rows, i_rows = examples.users, examples.u_rows, examples.i_rows
        order = torch.randperm(len(u_rows), generator=generator)
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            u, i = u_rows[batch], i_rows[batch]  # (B,), (B,)
            user_vec = net.users(users.categorical[u], users.dense[u],
                                 None if users.bags is None else users.bags[u])  # (B, out)
            item_vec = net.items(items.categorical[i], items.dense[i],
                                 None if items.bags is None else items.bags[i])  # (B, out)
            logits = user_vec @ item_vec.T / config.temperature - log_count[i].unsqueeze(0)  # (B, B)
            # Another row's item is no negative when it is the same item, another positive of this user
            # or an item of another type (types compete only among themselves at serving time).
            t = item_type[i]  # (B,)
            clash = ((i.unsqueeze(0) == i.unsqueeze(1)) | (u.unsqueeze(0) == u.unsqueeze(1))
                     | (t.unsqueeze(0) != t.unsqueeze(1)))  # (B, B)
            clash.fill_diagonal_(False)
            logits = logits.masked_fill(clash, -math.inf)
            if extra:
                j = torch.randint(count_items, (extra,), generator=generator)  # (M,)
                drawn = net.items(items.categorical[j], items.dense[j], None if items.bags is None else items.bags[j])
                drawn_logits = user_vec @ drawn.T / config.temperature - log_count[j].unsqueeze(0)  # (B, M)
                drawn_clash = (item_type[j].unsqueeze(0) != t.unsqueeze(1)) | (j.unsqueeze(0) == i.unsqueeze(1))
                logits = torch.cat([logits, drawn_logits.masked_fill(drawn_clash, -math.inf)], dim=1)  # (B, B + M)
            per_row = F.cross_entropy(logits, torch.arange(len(batch)), reduction="none")  # (B,)
            w = weights[t]  # (B,)
            loss = (per_row * w).sum() / w.sum()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        losses.append(total / len(order))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"two-tower loss became {losses[-1]}; lower lr (got {config.lr})")
    return losses


def _user_inputs(ids: pl.Series, history: pl.DataFrame, frames: FeatureFrames, config: TwoTowerConfig,
                 vocab: Vocabularies, profile_dim: int, text: Table, graph: Table,
                 profile: Table | None, factors: HistoryFactors | None = None) -> TowerInputs:
    inputs = user_inputs(ids, history, frames.user_stats, vocab, text, graph, profile, profile_dim,
                         config.item_types, config.graph_types, config.music_type,
                         config.history_bag_length if vocab.history_item and config.history_bag_dim else 0,
                         frames.item_topics)
    if factors is None:
        return inputs
    return replace(inputs, dense=torch.cat([inputs.dense, factors.users(ids, history)], 1))


def _with_item_factors(inputs: TowerInputs, factors: HistoryFactors | None) -> TowerInputs:
    return inputs if factors is None else replace(inputs, dense=torch.cat([inputs.dense, factors.items(inputs.ids)], 1))


def _tables(config: TwoTowerConfig, text_embeddings: pl.DataFrame, hgnn_embeddings: pl.DataFrame | None,
            profile_embeddings: pl.DataFrame | None) -> tuple[Table, Table, Table | None, Table | None]:
    text = embedding_table(text_embeddings, "item_id")
    if config.use_hgnn and hgnn_embeddings is None:
        raise ValueError("use_hgnn=True needs hgnn_embeddings (item_id, embedding); pass them or set use_hgnn=False")
    hgnn = embedding_table(hgnn_embeddings, "item_id") if config.use_hgnn and hgnn_embeddings is not None else None
    profile = embedding_table(profile_embeddings, "user_id") if profile_embeddings is not None else None
    return text, hgnn or text, hgnn, profile


def _target_items(frames: FeatureFrames, target_type: str) -> pl.Series:
    return _items_of(frames, (target_type,))


def _label_types(config: TwoTowerConfig) -> tuple[str, ...]:
    """The label types, target type last; types outside the graph have no HGNN embedding and are dropped."""
    chosen = config.graph_types if config.label_types is None else config.label_types
    others = [t for t in chosen if t != config.target_type and t in config.graph_types]
    return (*others, config.target_type)


def _items_of(frames: FeatureFrames, types: tuple[str, ...]) -> pl.Series:
    return frames.items.filter(pl.col("item_type").is_in(types))["item_id"].unique().sort()


def _type_codes(item_ids: pl.Series, items: pl.DataFrame, types: tuple[str, ...]) -> torch.Tensor:
    kinds = (item_ids.to_frame("item_id").join(items.select("item_id", "item_type").unique("item_id"),
                                               on="item_id", how="left", maintain_order="left")["item_type"])
    return kinds.replace_strict(list(types), list(range(len(types))), return_dtype=pl.Int64).to_torch()


def _popularity(frames: FeatureFrames, types: tuple[str, ...], history: pl.DataFrame) -> pl.DataFrame:
    """item_popularity per type: each item's reach ranked against items of its own type."""
    return pl.concat([item_popularity(_items_of(frames, (t,)), history.filter(pl.col("item_type") == t))
                      for t in types])


def _type_weights(item_type: torch.Tensor, label_rows: torch.Tensor, target: int,
                  config: TwoTowerConfig) -> torch.Tensor:
    """(types,) loss weight per label so that target-type labels carry `target_label_weight` of the loss."""
    counts = torch.bincount(item_type[label_rows], minlength=int(item_type.max()) + 1).double()
    if len(counts) == 1 or counts.sum() == counts[target]:
        return torch.ones(len(counts))
    share = torch.where(torch.arange(len(counts)) == target, config.target_label_weight,
                        (1 - config.target_label_weight) / (len(counts) - 1))
    return (share / counts.clamp(min=1) * counts.sum()).float()
