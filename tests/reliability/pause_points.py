"""Pause points for killable child processes: wrap a function so the process stops after its n-th call.

A child process (see KILLABLE_WRITER in conftest.py and KILLABLE_RUN in test_kill_train_serve.py) wraps
the functions it may be killed after, prints "paused" at the chosen point and sleeps until SIGKILL.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def half_copy_then_pause(copyfile: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """shutil.copyfile that writes half the file, passes the point "publish", then copies it whole."""
    def copy(source: Any, target: Any) -> Any:
        with open(source, "rb") as reader, open(target, "wb") as writer:
            writer.write(reader.read(Path(source).stat().st_size // 2))  # half a snapshot on disk
            writer.flush()
        pause("publish")
        return copyfile(source, target)
    return copy
