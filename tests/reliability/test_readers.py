"""Concurrent readers: reader processes query the published state in a loop during `crossfade run`; no errors, no torn state."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import ROOT

pytestmark = pytest.mark.slow


def test_readers_during_a_run_see_only_complete_snapshots(tmp_path: Path) -> None:
    figures_file = tmp_path / "readers.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "readers.py"), "--users", "200", "--days", "20", "--readers", "3",
         "--idle-seconds", "2", "--max-seconds", "500", "--json", str(figures_file)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert figures_file.exists(), done.stderr[-3000:]
    figures = json.loads(figures_file.read_text())
    # Each answer is one published state: raw.events agrees with the ingest log its gate published with it,
    # features.splits has its three rows, and a published snapshot answers the same on every read.
    assert figures["errors"] == 0 and figures["inconsistent"] == 0, figures["first_problems"]
    assert done.returncode == 0 and "RESULT readers" in done.stdout
    assert figures["rounds"] >= 3 * 5  # every reader kept reading throughout the run
    assert figures["snapshots_seen"] >= 3  # ... and saw the gates publish several times
    assert figures["final_events"] > 0
