# The two commands of the README: `make run` and `make test`. Everything else is plumbing for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch; set TORCH_SPEC=torch (or a CUDA index) on a GPU machine.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= .mmrag-data

.PHONY: run test test-fast install ocr-languages bench schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install "$(TORCH_SPEC)"
	$(BIN)/pip install -e ".[test]"
	# Export and cache the ONNX embedder now (about a minute, once), so no engine start waits for it.
	HF_HUB_OFFLINE=1 $(BIN)/mmrag models
	touch $@

# The browser of the web UI tests (tests/e2e/test_webui.py): Debian's Chromium, driven by Playwright through
# `executable_path` (never `playwright install`, which downloads a browser). Installed when missing and we are
# root; otherwise a message (those tests then fail saying how to install it). Only `make test` needs it: `make run`
# never installs a browser.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "NOTE: $(CHROMIUM) is missing and this is not root: the web UI tests need it (apt-get install -y chromium)"; \
	fi

install: $(VENV)/.installed

# Tesseract and Debian's language packs for the scripts the shipped PP-OCR models cannot read (Cyrillic, Greek...):
# the OCR fallback of MMRAG_OCR_FALLBACK_LANGUAGES (e.g. rus+ell). Set OCR_LANGUAGES to the packs to install
# (Debian's names: rus ell ukr bul srp ara heb hin...). Installed as root; otherwise a message. `make test` needs rus.
OCR_LANGUAGES ?= rus
TESSDATA ?= /usr/share/tesseract-ocr/5/tessdata
OCR_PACKS := $(foreach l,$(OCR_LANGUAGES),$(TESSDATA)/$(l).traineddata)
$(OCR_PACKS):
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr \
			$(foreach l,$(OCR_LANGUAGES),tesseract-ocr-$(l)); \
	else \
		echo "NOTE: $@ is missing and this is not root: the OCR fallback tests need it (apt-get install -y tesseract-ocr $(foreach l,$(OCR_LANGUAGES),tesseract-ocr-$(l)))"; \
	fi
ocr-languages: $(OCR_PACKS)

run: install
	HF_HUB_OFFLINE=1 $(BIN)/mmrag up --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR)

# Test files run on TEST_WORKERS processes (pytest-xdist; a file's tests stay on one worker, so a module's
# engine starts once): the end-to-end tests mostly wait on engine processes. 2 = the CI machine's cores.
TEST_WORKERS ?= 2
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# Every tier (tests/unit, tests/bus, tests/e2e, tests/security: pyproject's testpaths; tests/conftest.py says what
# each may start), as CI runs it.
test: install $(CHROMIUM) ocr-languages
	$(BIN)/ruff check .
	$(PYTEST) $(PYTEST_ARGS)

# unit + bus: no engine, no browser; the loop while changing code.
test-fast: install ocr-languages
	$(BIN)/ruff check .
	$(PYTEST) tests/unit tests/bus $(PYTEST_ARGS)

bench: install
	HF_HUB_OFFLINE=1 $(BIN)/python bench/embedding_speed.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/ingest_throughput.py
	HF_HUB_OFFLINE=1 $(BIN)/python bench/query_latency.py
	$(BIN)/python bench/page_render.py

schemas: install
	$(BIN)/mmrag schemas --out docs/schemas

clean:
	rm -rf $(VENV) $(DATA_DIR)
