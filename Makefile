# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Each creates the virtual environment in .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nasdb-installed
# The CPU wheel of torch; a GPU user installs a CUDA build into the venv first and it is kept.
TORCH_CPU ?= torch==2.13.0
DEMO_STORE ?= demo-store

.PHONY: demo test venv clean-demo browser

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_CPU)
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nasdb --store $(DEMO_STORE) demo

# The dashboard's tests drive Debian's Chromium through its chromedriver (no browser download at run time).
browser:
	command -v chromedriver >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

clean-demo:
	rm -rf $(DEMO_STORE)
