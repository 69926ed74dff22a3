"""HTTP retry timing by the convention: exponential backoff with full jitter, and a server's Retry-After."""
from __future__ import annotations

import datetime as dt
import email.utils
import random

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUSES = frozenset({429, 503})  # where a server's Retry-After replaces our own backoff
MAX_BACKOFF_S = 30.0  # cap on one jittered wait
MAX_TOTAL_WAIT_S = 120.0  # cap on all waits of one request, Retry-After included


def retry_after_s(value: str | None, now: dt.datetime | None = None) -> float | None:
    """Seconds a Retry-After header asks for, as delta-seconds or an HTTP date (RFC 9110 10.2.3); None when it
    is absent or unreadable, so the caller falls back to its own backoff."""
    if not value or not value.strip():
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (when - (now or dt.datetime.now(dt.timezone.utc))).total_seconds())


def full_jitter_s(retry: int, base_s: float, rng: random.Random, cap_s: float = MAX_BACKOFF_S) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap_s, base_s * 2**(retry - 1))] for retry >= 1."""
    return rng.uniform(0.0, min(cap_s, base_s * 2 ** (retry - 1)))
