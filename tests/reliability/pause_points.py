"""Pause points for killable child processes: wrap a function so the process stops at its n-th call.

A child process (see KILLABLE_WRITER in conftest.py and KILLABLE_RUN in test_kill_train_serve.py) wraps
the functions it may be killed at, prints "paused" at the chosen point and sleeps until SIGKILL.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from warehouse.store import STATE

_point = {"name": "", "occurrence": 1, "seen": 0}


def arm(name: str, occurrence: int) -> None:
    """Pause at the `occurrence`-th pass through the point called `name` ("" never pauses)."""
    _point.update(name=name, occurrence=occurrence, seen=0)


def pause(name: str) -> None:
    if name == _point["name"]:
        _point["seen"] += 1
        if _point["seen"] == _point["occurrence"]:
            print("paused", flush=True)
            time.sleep(600)


def after(function: Callable[..., Any], name: str) -> Callable[..., Any]:
    """`function`, then the point `name`."""
    def run(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        pause(name)
        return result
    return run


def after_sql(run_sql: Callable[..., None]) -> Callable[..., None]:
    """store.run_sql, then a point named after the SQL file (e.g. "features/interactions")."""
    def run(con: Any, name: str, params: dict | None = None) -> None:
        run_sql(con, name, params)
        pause(name)
    return run


def before_publish(replace: Callable[..., None]) -> Callable[..., None]:
    """os.replace that passes the point "publish" before it moves a file onto published.json.

    The write has committed and its new state is written beside published.json, which still names what
    readers see: a kill here is a kill mid-publish.
    """
    def run(source: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        if Path(target).name == STATE:
            pause("publish")
        replace(source, target, *args, **kwargs)
    return run
