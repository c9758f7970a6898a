# The two commands (see README):
#   make serve   install, export the int8 encoder (once), build the bundle from routes/, serve on 127.0.0.1:50051
#   make test    install with dev tools, run ruff, mypy and pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BUNDLE ?= bundle
# The CPU build of torch, needed only to export the encoder. This machine's pip finds 2.13.0 on local disk;
# elsewhere set TORCH_PIP_ARGS to PyTorch's CPU wheel index, or pip pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: system-deps install install-export serve bundle test check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install-export: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[export]'

install: $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e '.[dev]'

bundle: install-export
	HF_HUB_OFFLINE=1 $(BIN)/semroute build-index routes --out $(BUNDLE)

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
