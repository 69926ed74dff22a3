"""warehouse/lake.py: the DuckLake extensions come from the installed wheels, linked into each home, never downloaded."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from warehouse import lake


def test_each_home_links_the_wheels_extensions_and_loads_them_with_autoinstall_off(tmp_path: Path) -> None:
    homes = [tmp_path / "a", tmp_path / "b"]
    for home in homes:
        folder = lake.extension_directory(home)
        con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False,
                                     "extension_directory": str(folder)})
        con.execute("load ducklake; load sqlite")  # raises if the files are missing or broken
        con.close()
    for package in lake.WHEELS:
        source = Path(str(lake.wheel_extension(package)))
        linked = [next((home / lake.EXTENSIONS).rglob(f"{lake.WHEELS[package]}.duckdb_extension")) for home in homes]
        assert all(path.read_bytes() == source.read_bytes() for path in linked)
        if os.stat(source).st_dev != os.stat(tmp_path).st_dev:
            pytest.skip("the wheels live on another file system here: the homes hold copies")
        assert all(path.samefile(source) for path in linked)  # one file on disk, however many homes


def test_a_second_call_keeps_the_files_and_leaves_no_partial(tmp_path: Path) -> None:
    folder = lake.extension_directory(tmp_path)
    before = {path: path.stat().st_ino for path in folder.rglob("*.duckdb_extension")}
    assert lake.extension_directory(tmp_path) == folder
    assert {path: path.stat().st_ino for path in folder.rglob("*.duckdb_extension")} == before
    assert not list(folder.rglob("*.partial"))


def test_duckdb_memory_is_limited_and_the_limit_is_configurable(tmp_path: Path) -> None:
    """A fresh process, so its one DuckDB is created with the variable's limit; 4GB without it."""
    script = ("import sys; from pathlib import Path; from warehouse.store import Store\n"
              "with Store(Path(sys.argv[1])).write() as con:\n"
              "    print(con.sql(\"select current_setting('memory_limit'), current_setting('temp_directory')\").fetchone())")
    limits = {}
    for value in ("512MB", None):
        env = {key: item for key, item in os.environ.items() if key != lake.MEMORY_LIMIT_ENV}
        if value:
            env[lake.MEMORY_LIMIT_ENV] = value
        done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "crossfade.duckdb")], env=env,
                              capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], check=True)
        limits[value] = done.stdout
    assert "488.2 MiB" in limits["512MB"] and "3.7 GiB" in limits[None]  # DuckDB prints 10^x bytes in 2^x units
    assert str(tmp_path / lake.SPILL) in limits[None]
