# crossfade: `make demo` and `make test` do all set-up on a fresh clone (a .venv, torch first, then the project).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.crossfade-installed
# MovieLens-100K for the public-data test and benchmark, extracted from the recbole wheel (PyPI) at set-up.
ML100K := .cache/ml-100k/ml-100k.inter
export CROSSFADE_HOME ?= $(CURDIR)/.crossfade
export DAGSTER_HOME ?= $(CROSSFADE_HOME)/dagster
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

# llama.cpp built for the build machine's own CPU (-march=native) crashed in llama_decode on hosts that
# report AMX and AVX-512 (every prompt, in 0.3.35 and 0.3.36); built for AVX2 it runs there too.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
endif
LLAMA_VERSION := $(shell sed -n 's/.*"llama-cpp-python\[server\]==\([0-9.]*\)".*/\1/p' pyproject.toml)

DEMO_USERS ?= 2000
DEMO_DAYS ?= 120
DEMO_SEED ?= 7
# LLM calls per enrichment asset and judge in the demo: enough answers for one night to measure their quality
DEMO_LLM_CALL_BUDGET ?= 20
# llama.cpp threads: 2 halve the LLM's time on an idle 2-core machine, but its threads spin at barriers, and
# beside any other busy process they ran many times slower than one thread
DEMO_LLM_THREADS ?= 1

.PHONY: install demo test test-fast ui bench clean

install: $(STAMP) $(ML100K)

$(STAMP): pyproject.toml
	@echo "set-up: creating $(VENV) and installing crossfade (first time: a few minutes)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	@# torch first: a CPU build of exactly this version lies on disk; any other pulls a CUDA build.
	$(PY) -m pip install -qq torch==2.13.0
	@echo "set-up: compiling llama-cpp-python $(LLAMA_VERSION) (about five minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PY) -m pip install -qq --no-cache-dir 'llama-cpp-python[server]==$(LLAMA_VERSION)'
	$(PY) -m pip install -qq -e '.[test]'
	touch $(STAMP)

$(ML100K): | $(STAMP)
	@echo "set-up: MovieLens-100K from the recbole wheel into .cache/ml-100k"
	$(PY) -m worlds.movielens fetch --dest .cache/ml-100k

demo: $(STAMP)
	@if [ ! -d "$(CROSSFADE_HOME)/landing/events" ]; then \
		$(VENV)/bin/crossfade simulate --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed $(DEMO_SEED) --out "$(CROSSFADE_HOME)/landing"; \
	fi
	CROSSFADE_LLM_CALL_BUDGET=$${CROSSFADE_LLM_CALL_BUDGET:-$(DEMO_LLM_CALL_BUDGET)} \
		CROSSFADE_LLM_THREADS=$${CROSSFADE_LLM_THREADS:-$(DEMO_LLM_THREADS)} $(VENV)/bin/crossfade run

# Test processes (pytest-xdist); each test file stays in one process, so a module's fixtures are built once.
TEST_WORKERS ?= 2

test: $(STAMP) $(ML100K)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast: $(STAMP) $(ML100K)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

ui: $(STAMP)
	mkdir -p "$(DAGSTER_HOME)"
	$(VENV)/bin/crossfade dagster-home >/dev/null
	$(VENV)/bin/dagster dev -w workspace.yaml

bench: $(STAMP)
	$(PY) bench/ingest.py

clean:
	rm -rf "$(CROSSFADE_HOME)"
