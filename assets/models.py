"""Model stage: HGNN item vectors, the 2T-HGNN bundle registered as a candidate, the gate, and promotion."""

import io
import math
from dataclasses import asdict, replace

import dagster as dg
import duckdb
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from assets.common import WAREHOUSE_POOL, gate, markdown_table, png_markdown, preview
from assets.resources import Crossfade, Warehouse
from models import hgnn, protocol, two_tower
from models.bundle import BUNDLED_MODEL, ModelBundle, empty_slices, slice_metrics
from models.evaluate import HOLDOUT, EvaluateConfig, factors_as_ease
from models.metrics import SLICES
from models.graph import ItemGraph, build_graph, relation_names
from models.recommender import FeatureFrames
from models.text_features import node_features, text_or_hashed
from quality import check, model_suites
from warehouse import readers, registry
from warehouse.store import NothingPublishedError, run_sql, scalar, table_exists


class HGNNRun(dg.Config):
    """HGNN knobs people turn from the UI; defaults and their reasons live in models.hgnn.HGNNConfig."""

    max_epochs: int = hgnn.HGNNConfig.max_epochs
    patience: int = hgnn.HGNNConfig.patience
    batch_size: int = hgnn.HGNNConfig.batch_size
    positional_dim: int = hgnn.HGNNConfig.positional_dim
    max_epoch_edges: int = hgnn.HGNNConfig.max_epoch_edges
    num_threads: int | None = hgnn.HGNNConfig.num_threads  # None: torch's setting, every core by default
    seed: int | None = None  # None: the `seed` setting


class TwoTowerRun(dg.Config):
    """Two-tower knobs people turn from the UI; defaults and their reasons live in models.two_tower.TwoTowerConfig."""

    epochs: int = two_tower.TwoTowerConfig.epochs
    max_users_per_epoch: int = two_tower.TwoTowerConfig.max_users_per_epoch
    seed: int | None = None  # None: the `seed` setting


def _with_seed(config: dg.Config, seed: int) -> dict:
    values = config.model_dump()
    return {**values, "seed": seed if values["seed"] is None else values["seed"]}


def hgnn_inputs(con: duckdb.DuckDBPyConnection, graph_types: tuple[str, ...], target_type: str,
                ) -> tuple[ItemGraph, Tensor, str, int]:
    """(co-listening graph, node features, text source, items without text) of the published features."""
    node_types = sorted({*graph_types, target_type})
    edges = con.sql("select * from features.co_listen_edges").pl()
    items = con.sql("select * from raw.items").pl()
    text, text_source = text_or_hashed(readers.item_text_embeddings(con), items)
    nodes = (items.filter(pl.col("item_type").is_in(node_types)).select("item_id", "item_type")
             .unique("item_id").sort("item_id"))
    graph = build_graph(edges, nodes, relation_names(graph_types))
    features, missing = node_features(nodes["item_id"], text)  # (N, d)
    return graph, features, text_source, missing


@dg.asset(pool=WAREHOUSE_POOL, key=["models", "hgnn_item_embeddings"], group_name="models", kinds={"pytorch", "duckdb"},
          deps=[["features", "co_listen_edges"], ["enrich", "text_embeddings"], ["raw", "items"]])
def models_hgnn_item_embeddings(context: dg.AssetExecutionContext, config: HGNNRun, crossfade: Crossfade,
                                warehouse: Warehouse) -> dg.MaterializeResult:
    """Unit-length HGNN vectors of every graph-type and target-type item, edges or not (inductive).

    Two heterogeneous GraphSAGE layers over the co-listening graph, trained by link prediction with the
    balanced multi-link sampler; node features are the items' text embeddings.
    """
    settings = crossfade.settings()
    with warehouse.read() as con:
        as_of = crossfade.as_of(context, con)
        graph, features, text_source, missing = hgnn_inputs(con, settings.graph_types, settings.target_type)
    hgnn_config = hgnn.HGNNConfig(**_with_seed(config, settings.seed))
    context.log.info(f"HGNN: {graph.num_nodes:,} items, edges {graph.edge_counts()}, text from {text_source}")
    result = hgnn.train(graph, features, hgnn_config)
    version = f"hgnn-{as_of:%Y%m%d}-{context.run_id[:8]}"
    folder = settings.model_dir(version)
    folder.mkdir(parents=True, exist_ok=True)
    hgnn.save_checkpoint(result.model_state, folder / "hgnn.pt")
    with warehouse.write("models.hgnn_item_embeddings") as con:
        con.register("hgnn_vectors", result.embeddings_frame().to_arrow())
        run_sql(con, "models/hgnn_item_embeddings", {"model_version": version})
        con.unregister("hgnn_vectors")
        rows = scalar(con, "select count(*) from models.hgnn_item_embeddings")
        sample = preview(con, "(select item_id, item_type, embedding[1:4] as head, model_version "
                              "from models.hgnn_item_embeddings)")
    curve = pl.DataFrame(result.curve)
    context.log.info(f"models.hgnn_item_embeddings: {rows:,} vectors, best epoch {result.best_epoch} of "
                     f"{len(result.curve)}, {result.timings['total']:.1f} s")
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "model_version": version, "as_of": as_of.isoformat(),
        "text_features": text_source, "items_without_text": missing,
        "edges_by_relation": dg.MetadataValue.md(graph.edge_counts_markdown()),
        "best_epoch": result.best_epoch, "epochs_run": len(result.curve),
        "best_valid_loss": float(curve["valid_loss"][result.best_epoch - 1]),
        "best_valid_auc": float(curve["valid_auc"][result.best_epoch - 1]),
        "seconds": dg.MetadataValue.json({k: round(v, 2) for k, v in result.timings.items()}),
        "training_curve": png_markdown(_curve_png(curve), "HGNN training curve"),
        "curve": dg.MetadataValue.md(markdown_table(curve.with_columns(pl.col(pl.Float64).round(4)))),
        "config": dg.MetadataValue.json(asdict(hgnn_config)),
        "checkpoint": str(folder / "hgnn.pt"), "preview": sample,
    })


@dg.asset_check(asset=models_hgnn_item_embeddings, blocking=True, name="models_hgnn_item_embeddings_suite",
                description="Gate: one finite unit vector per graph and target item, one width, one version.")
def models_hgnn_item_embeddings_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = check(con, "models.hgnn_item_embeddings", crossfade.thresholds())
    return gate(report, warehouse, "models.hgnn_item_embeddings")


@dg.asset(pool=WAREHOUSE_POOL, key=["models", "two_tower"], group_name="models", kinds={"pytorch", "duckdb"},
          deps=[models_hgnn_item_embeddings, ["features", "interactions"], ["features", "user_stats"],
                ["features", "item_stats"], ["features", "splits"], ["enrich", "text_embeddings"]])
def models_two_tower(context: dg.AssetExecutionContext, config: TwoTowerRun, crossfade: Crossfade,
                     warehouse: Warehouse) -> dg.MaterializeResult:
    """The night's serving plan and its 2T-HGNN bundle, registered as a candidate (README, "Evaluation protocol").

    Validation: every model (the baselines with their grids, 2T-HGNN itself) is fitted on 'train' and
    scored on 'valid' (the grids once every `retune_days`: `protocol.reusable`); per slice (cold, warm) the
    plan serves the model that validated best. Then 2T-HGNN
    is refitted on train + valid and saved as the bundle eval/offline_metrics scores on the holdout and
    serving reads (over the whole window's history). Registered metrics: the plan's own per slice
    (model 'served'), every model's on validation, the chosen settings, and the best baseline's, which
    the promotion gate compares.
    """
    settings = crossfade.settings()
    with warehouse.read() as con:
        as_of = crossfade.as_of(context, con)
        frames = FeatureFrames(**readers.feature_tables(con))
        text, text_source = text_or_hashed(readers.item_text_embeddings(con), frames.items)
        profile = readers.profile_embeddings(con)
        vectors = con.sql("select item_id, item_type, embedding, model_version from models.hgnn_item_embeddings").pl()
        previous = registry.latest_tuned(con)
    hgnn_version = vectors["model_version"][0]
    tt_config = two_tower.TwoTowerConfig(
        target_type=settings.target_type, graph_types=settings.graph_types, item_types=settings.item_types,
        **_with_seed(config, settings.seed))
    eval_config = EvaluateConfig(target_type=settings.target_type, graph_types=settings.graph_types,
                                 k=settings.k, max_users=settings.eval_max_users, seed=settings.seed,
                                 models=protocol.SERVABLE, two_tower=tt_config)
    splits = dict(zip(frames.splits["split"], frames.splits.select("start_at", "end_at").rows()))
    reused, tuning = protocol.reusable(previous, as_of, splits["holdout"][0], settings.retune_days, eval_config)
    context.log.info(f"models.two_tower: {tuning}")
    if reused is not None:
        eval_config = protocol.tuned(eval_config, {"tuned": reused})
    validation = protocol.validate(frames, vectors, text, profile, eval_config, retune=reused is None)
    plan = protocol.serving_plan(validation.metrics)
    context.log.info("models.two_tower: validation plan " + ", ".join(
        f"{name} -> {step['model']} ({step['basis']})" for name, step in plan.items()))
    tt_config = factors_as_ease(replace(validation.config.two_tower, periods=HOLDOUT.fitted), validation.config.ease)
    model = two_tower.fit(frames, tt_config, text_embeddings=text, hgnn_embeddings=vectors, profile_embeddings=profile)
    version = f"2t-hgnn-{as_of:%Y%m%d}-{context.run_id[:8]}"
    manifest = {"model_version": version, "model_name": BUNDLED_MODEL, "as_of": as_of.isoformat(),
                "target_type": settings.target_type, "graph_types": list(settings.graph_types),
                "text_model": text_source, "hgnn_version": hgnn_version, "uses_profiles": profile is not None,
                "train_start": splits["train"][0].isoformat(), "train_end": splits["valid"][1].isoformat()}
    checkpoint = hgnn.load_checkpoint(settings.model_dir(hgnn_version) / "hgnn.pt")
    bundle = ModelBundle(model, vectors.drop("model_version"), manifest, checkpoint)
    folder = bundle.save(settings.model_dir(version))
    scores = validation.metrics
    served = slice_metrics(scores, protocol.SERVED)
    gate = model_suites.gate_basis(served)  # the slice the promotion gate compares on, and why: recorded with the row
    best = {name: dict(zip(("model", "hr@10"), protocol.best_baseline(scores, name))) for name in SLICES}
    metrics = served | {
        "gate": gate, "empty_slices": empty_slices(served), "plan": plan,
        "validation": {name: slice_metrics(scores, name) for name in scores["model"].unique(maintain_order=True)},
        "validation_rows": scores.to_dicts(), "grid": validation.grid.to_dicts(),
        "tuned": protocol.tuned_settings(validation.config), "tuning": tuning,
        "tuned_at": as_of.isoformat() if reused is None else previous["metrics"]["tuned_at"],
        "reference": {"popularity": slice_metrics(scores, "popularity"), "best_baseline": best},
        "training": {"losses": model.losses, "losses_finite": all(math.isfinite(x) for x in model.losses),
                     "seconds": round(model.seconds, 2)},
    }
    row = {"model_version": version, "model_name": BUNDLED_MODEL, "as_of": as_of,
           "train_start": splits["train"][0], "train_end": splits["valid"][1],
           "config": {"two_tower": asdict(tt_config), "hgnn": checkpoint["config"], "hgnn_version": hgnn_version,
                      "text_model": text_source},
           "metrics": metrics, "checkpoint_dir": str(folder)}
    with warehouse.write("models.two_tower") as con:
        registry.register(con, row)
    gate_rows = scores.filter(pl.col("metric").is_in(["hr@10", "ndcg@10", "recall@20"]))
    gate_slice = gate["slice"] or "all"
    context.log.info(f"models.two_tower: {version} refitted in {model.seconds:.1f} s; validation {gate_slice} HR@10 "
                     f"served {served.get(gate_slice, {}).get('hr@10', math.nan):.4f}, 2T-HGNN "
                     f"{metrics['validation'][BUNDLED_MODEL].get(gate_slice, {}).get('hr@10', math.nan):.4f}, best "
                     f"baseline {best[gate_slice]['model']} {best[gate_slice]['hr@10'] or math.nan:.4f} "
                     f"({gate['reason']}); empty slices: {', '.join(metrics['empty_slices']) or 'none'}")
    return dg.MaterializeResult(metadata={
        "model_version": version, "as_of": as_of.isoformat(), "checkpoint_dir": str(folder),
        "text_features": text_source, "profile_embeddings": profile is not None, "hgnn_version": hgnn_version,
        "training_seconds": round(model.seconds, 2), "epochs": len(model.losses),
        "final_loss": round(model.losses[-1], 4),
        "gate_slice": gate["slice"] or "none", "gate_basis": gate["reason"],
        "plan": dg.MetadataValue.md(markdown_table(pl.DataFrame(
            [{"slice": name, **step} for name, step in plan.items()]))),
        "tuned": dg.MetadataValue.json(metrics["tuned"]), "tuning": tuning, "tuned_at": metrics["tuned_at"],
        "empty_slices": ", ".join(metrics["empty_slices"]) or "none",
        "training_curve": png_markdown(_curve_png(pl.DataFrame({"epoch": range(1, len(model.losses) + 1),
                                                                "train_loss": model.losses})), "two-tower loss"),
        "metrics": dg.MetadataValue.md(markdown_table(
            gate_rows.pivot(on="slice", index=["model", "metric"], values="value")
            .with_columns(pl.col(pl.Float64).round(4)))),
    })


@dg.asset_check(asset=models_two_tower, blocking=True, name="models_two_tower_promotion_gate", pool=WAREHOUSE_POOL,
                description="Gate on validation: finite losses; the plan serves at least the best baseline's cold "
                            "HR@10 (all users' when fewer than 10 cold users have a validation target; the verdict "
                            "says which); no regression beyond promotion_tolerance (default 10%) against the "
                            "promoted plan on the same slice.")
def models_two_tower_promotion_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    """A failed gate marks the candidate 'rejected' with the reason, and publishes that, so the registry says why;
    a passing gate publishes the candidate, which only then can be promoted."""
    tolerance = crossfade.settings().promotion_tolerance
    with warehouse.audit() as con:
        candidate = registry.latest(con)
        if candidate is None:
            raise dg.Failure("models.registry is empty: materialise models/two_tower first")
        report, facts = model_suites.promotion_gate(con, candidate["model_version"], tolerance)
    reason = model_suites.gate_reason(report, facts, tolerance)
    if not report.success and candidate["status"] == "candidate":
        with warehouse.write() as con:  # published at once: readers see the rejected candidate and the reason
            registry.reject(con, candidate["model_version"], f"promotion gate: {reason}")
    return gate(report, warehouse, "models.two_tower", {"verdict": reason, "facts": dg.MetadataValue.json(facts),
                                                       "tolerance": tolerance})


@dg.asset(pool=WAREHOUSE_POOL, key=["models", "registry"], deps=[models_two_tower], group_name="models", kinds={"duckdb"})
def models_registry(context: dg.AssetExecutionContext, warehouse: Warehouse) -> dg.MaterializeResult:
    """Promotes the newest candidate whose promotion gate passed (the gate published it); the old promoted model
    retires. Older candidates still waiting, whose runs stopped before a verdict, are rejected as superseded.
    """
    try:
        with warehouse.read() as con:
            gated = registry.candidates(con) if table_exists(con, "models.registry") else []
    except NothingPublishedError:
        gated = []
    if not gated:
        raise dg.Failure("no candidate in models.registry passed its promotion gate; materialise models/two_tower "
                         "and its models_two_tower_promotion_gate check")
    newest = gated[0]
    with warehouse.write("models.registry") as con:
        stale = [row for row in registry.candidates(con)
                 if row["model_version"] != newest["model_version"] and row["created_at"] <= newest["created_at"]]
        previous = registry.promoted(con)
        for row in stale:
            registry.reject(con, row["model_version"], f"superseded by {newest['model_version']} before a verdict")
        registry.promote(con, newest["model_version"])
        rows = scalar(con, "select count(*) from models.registry")
        table = con.sql("select model_version, status, as_of, created_at, promoted_at, reason, "
                        "round((metrics->'cold'->>'hr@10')::double, 4) as cold_hr10, "
                        "metrics->'gate'->>'reason' as gate_basis "
                        "from models.registry order by created_at desc limit 10").pl()
    basis = newest["metrics"].get("gate", {}).get("reason", "")
    context.log.info(f"models.registry: promoted {newest['model_version']}"
                     + (f", retired {previous['model_version']}" if previous else "") + (f"; gate: {basis}" if basis else ""))
    return dg.MaterializeResult(metadata={
        "dagster/row_count": rows, "promoted": newest["model_version"],
        "retired": previous["model_version"] if previous else "",
        "rejected_stale": len(stale), "registry": dg.MetadataValue.md(markdown_table(table)),
    })


@dg.asset_check(asset=models_registry, blocking=True, name="models_registry_suite",
                description="Gate: unique versions, known statuses, exactly one promoted model.")
def models_registry_gate(crossfade: Crossfade, warehouse: Warehouse) -> dg.AssetCheckResult:
    with warehouse.audit() as con:
        report = check(con, "models.registry", crossfade.thresholds())
    return gate(report, warehouse, "models.registry")


def _curve_png(curve: pl.DataFrame) -> bytes:
    """Losses by epoch (and validation AUC when present) as a small PNG."""
    figure = Figure(figsize=(6, 3), layout="constrained")
    ax = figure.subplots()
    for column in ("train_loss", "valid_loss"):
        if column in curve.columns:
            ax.plot(curve["epoch"].to_list(), curve[column].to_list(), marker="o", label=column)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if "valid_auc" in curve.columns:
        twin = ax.twinx()
        twin.plot(curve["epoch"].to_list(), curve["valid_auc"].to_list(), color="grey", linestyle="--",
                  label="valid_auc")
        twin.set_ylabel("validation AUC")
    ax.legend(loc="upper right", fontsize="small")
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()
