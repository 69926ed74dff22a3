"""Token log-probabilities of a chat completion, and the probability of each value of the answer's first field.

Both backends return the OpenAI chat shape: `choices[0].logprobs.content[i]` holds the generated token, its
log-probability and `top_logprobs`, the most likely tokens at that position (llama-cpp-python computes them from
the raw logits, before the JSON grammar, so tokens the grammar forbids are among them).

With the decision first in the schema (`{"aligned": true, ...}`), the first token where the values' JSON texts
differ decides the answer. `choice_probabilities` sums, at that token, the probability of the alternatives that
begin each value ('true' and ' true' for true, 't' too), and renormalises over the values: the answer's
probability among its choices, whatever mass went to tokens the grammar would not allow.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]  # (token, logprob) of the likeliest tokens at this position


def parse_content(logprobs: Any) -> tuple[TokenLogprob, ...]:
    """The tokens of an OpenAI-shaped `choices[0].logprobs` ({"content": [...]}); () when absent or malformed."""
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list):
        return ()
    tokens = []
    try:
        for entry in content:
            top = tuple((str(alt["token"]), float(alt["logprob"])) for alt in entry.get("top_logprobs") or ())
            tokens.append(TokenLogprob(str(entry["token"]), float(entry["logprob"]), top))
    except (KeyError, TypeError, ValueError, AttributeError):
        return ()
    return tuple(tokens)


def value_literals(schema: dict[str, Any]) -> tuple[str, dict[str, str]] | None:
    """(first field, {label: JSON text of the value}) when the schema's first field has a fixed set of values:
    a boolean ({'true': 'true', 'false': 'false'}) or an enum of strings ({'A': '"A"', ...}); else None."""
    properties = schema.get("properties") or {}
    if not properties:
        return None
    field, spec = next(iter(properties.items()))
    if spec.get("type") == "boolean":
        return field, {"true": "true", "false": "false"}
    values = spec.get("enum")
    if values and all(isinstance(value, str) for value in values):
        return field, {value: json.dumps(value) for value in values}
    return None


def choice_probabilities(tokens: Sequence[TokenLogprob], schema: dict[str, Any]) -> dict[str, float] | None:
    """{label: probability} of the values of the schema's first field, read at the token where they first differ
    (see the module docstring); None when the tokens, the field or any matching alternative is missing."""
    literals = value_literals(schema)
    if literals is None or not tokens:
        return None
    field, values = literals
    text = "".join(token.token for token in tokens)
    found = re.search(r'"' + re.escape(field) + r'"\s*:\s*', text)
    if found is None:
        return None
    shared = _common_prefix(list(values.values()))
    decides = found.end() + len(shared)  # offset of the first character where the values differ
    start = 0
    for token in tokens:
        end = start + len(token.token)
        if start <= decides < end:
            break
        start = end
    else:
        return None
    before = _squeeze(text[start:decides])  # what the deciding token carries ahead of the value
    rests = {label: literal[len(shared):] for label, literal in values.items()}
    mass = dict.fromkeys(values, 0.0)
    for alternative, logprob in dict([*token.top, (token.token, token.logprob)]).items():
        squeezed = _squeeze(alternative)
        if not squeezed.startswith(before):
            continue
        rest = squeezed[len(before):]
        matches = [label for label, tail in rests.items() if rest and (tail.startswith(rest) or rest.startswith(tail))]
        if len(matches) == 1:  # a prefix shared by two values ('t' of 'tie' and 'true') decides nothing
            mass[matches[0]] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None
    return {label: share / total for label, share in mass.items()}


def _common_prefix(texts: list[str]) -> str:
    shortest = min(texts, key=len)
    for n, char in enumerate(shortest):
        if any(text[n] != char for text in texts):
            return shortest[:n]
    return shortest


def _squeeze(text: str) -> str:
    return "".join(text.split())
