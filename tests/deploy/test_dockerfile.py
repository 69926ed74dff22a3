"""The deploy image builds as `make install` does: same torch, same llama-cpp-python and flags, torch first."""
from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=(?!=)")  # CMAKE_ARGS=... before a command, not torch==...
COMPILERS = {"build-essential", "gcc", "g++", "clang", "cmake", "make", "ninja-build"}


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments), ARGs resolved

    def commands(self) -> list[list[str]]:
        """The shell commands of the stage's RUN lines, in order, each split into words."""
        commands: list[list[str]] = []
        for keyword, args in self.instructions:
            if keyword == "RUN":
                commands.append([])
                for word in shell_words(re.sub(r"^(--\S+\s+)*", "", args)):  # RUN's own --mount=... flags
                    if word in ("&&", "||", ";"):
                        commands.append([])
                    else:
                        commands[-1].append(word)
        return commands

    def pip(self, subcommand: str) -> list[list[str]]:
        """The stage's `pip <subcommand>` commands, in order, with any VAR=value before them left out."""
        commands = ([word for word in words if not ASSIGNMENT.match(word)] for words in self.commands())
        return [words for words in commands if words[:2] == ["pip", subcommand]]


def shell_words(line: str) -> list[str]:
    """Words as the shell splits them, with &&, || and ; as words of their own."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    return list(lexer)


def parse_dockerfile(path: Path) -> dict[str, Stage]:
    """Stages by name (the last one is 'runtime' unless named); ${ARG}s replaced by their default values."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    defaults: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        args = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], args)
        if keyword == "ARG" and "=" in args:
            name, value = args.split("=", 1)
            defaults[name] = shlex.split(value)[0]
        elif keyword == "FROM":
            words = args.split()
            stages.append(Stage(words[-1] if words[-2:-1] == ["AS"] else "runtime"))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return {stage.name: stage for stage in stages}


def makefile_torch() -> str:
    (version,) = set(re.findall(r"pip install -qq torch==([\d.]+)", (ROOT / "Makefile").read_text()))
    return version


def makefile_llama_cmake_args() -> list[str]:
    block = re.search(r"ifeq \(\$\(shell uname -m\),x86_64\)\n(.*?)\nendif", (ROOT / "Makefile").read_text(), re.S)
    (value,) = re.findall(r"^LLAMA_CMAKE_ARGS \?= (.*)$", block.group(1), re.M)
    return value.split()


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned_llama() -> str:
    pins = [dep for dep in pyproject()["project"]["dependencies"] if dep.startswith("llama-cpp-python")]
    (version,) = [pin.split("==")[1] for pin in pins]
    return version


def installs(stage: Stage, package: str) -> list[int]:
    """Positions among the stage's commands of the pip commands that name `package` (exactly, or pinned)."""
    return [
        i for i, words in enumerate(stage.commands())
        if "pip" in words and any(word == package or word.startswith((f"{package}==", f"{package}[")) for word in words)
    ]


@pytest.fixture(scope="module")
def stages() -> dict[str, Stage]:
    stages = parse_dockerfile(ROOT / "deploy" / "k8s" / "Dockerfile")
    assert list(stages) == ["build", "runtime"], "a build stage with the compiler, then the runtime stage"
    return stages


def test_torch_is_the_makefiles_version_from_the_cpu_index(stages) -> None:
    (build,) = [words for words in stages["build"].pip("wheel") if f"torch=={makefile_torch()}" in words]
    assert build[build.index("--index-url") + 1] == "https://download.pytorch.org/whl/cpu"
    pins = {word for stage in stages.values() for words in stage.commands() for word in words if "torch==" in word}
    assert pins == {f"torch=={makefile_torch()}"}


def test_llama_cpp_python_is_pyprojects_pin_compiled_with_the_makefiles_x86_flags(stages) -> None:
    runs = [args for keyword, args in stages["build"].instructions if keyword == "RUN"]
    (command,) = [run for run in runs if "llama-cpp-python" in run]
    words = shell_words(command)
    assert f"llama-cpp-python[server]=={pinned_llama()}" in words
    (cmake_args,) = [word.split("=", 1)[1] for word in words if word.startswith("CMAKE_ARGS=")]
    assert cmake_args.split() == makefile_llama_cmake_args()
    assert words.index(f"CMAKE_ARGS={cmake_args}") < words.index("pip")  # set for this pip, not after it


def test_torch_comes_before_the_project_in_both_stages(stages) -> None:
    build, runtime = stages["build"], stages["runtime"]
    assert max(installs(build, "torch")) < min(installs(build, "."))
    assert max(installs(runtime, "torch")) < min(installs(runtime, "crossfade"))


def test_every_package_directory_is_copied(stages) -> None:
    patterns = pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {pattern.rstrip("*.") for pattern in patterns}
    copies = [args.split() for keyword, args in stages["build"].instructions if keyword == "COPY"]
    copied = {source.rstrip("/") for words in copies for source in words[:-1]}  # the last word is the destination
    assert packages <= {path.name for path in ROOT.iterdir() if path.is_dir()}, "pyproject names a missing folder"
    assert packages | {"pyproject.toml", "README.md"} <= copied, f"not copied: {sorted(packages - copied)}"


def test_the_runtime_stage_has_no_compiler_and_installs_only_built_wheels(stages) -> None:
    runtime = stages["runtime"]
    apt = {word for words in runtime.commands() if words[:2] == ["apt-get", "install"] for word in words[2:]}
    assert not apt & COMPILERS
    assert not [words for words in runtime.commands() if any(word.startswith("CMAKE_ARGS") for word in words)]
    assert runtime.pip("wheel") == []
    assert all("--no-index" in words for words in runtime.pip("install")), "pip could fetch and compile an sdist"
    assert COMPILERS & {word for words in stages["build"].commands() for word in words} >= {"build-essential", "cmake"}


def test_the_image_keeps_dagster_k8s_the_duckdb_extensions_and_the_grpc_server(stages) -> None:
    runtime = stages["runtime"]
    assert any("dagster-k8s==0.29.27" in words for words in runtime.pip("install"))
    keywords = [keyword for keyword, _ in runtime.instructions]
    assert {"ENV", "EXPOSE", "CMD"} <= set(keywords)
    assert any("install_extension('httpfs')" in args for keyword, args in runtime.instructions if keyword == "RUN")
    assert dict(runtime.instructions)["CMD"].endswith('"-m", "pipelines.definitions"]')
