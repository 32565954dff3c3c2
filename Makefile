# The two commands of the README: `make run` and `make test`. Everything else is plumbing for them.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every dependency comes from a lock file, hash-checked (requirements/, decision 77); the torch there is the CPU
# build. On a GPU machine set TORCH_SPEC to a torch requirement (e.g. TORCH_SPEC=torch==2.13.0, PyPI's CUDA build):
# it replaces the lock's torch and is not hash-checked (requirements/install.sh).
TORCH_SPEC ?=
HOST ?= 127.0.0.1
PORT ?= 8080
DATA_DIR ?= .mmrag-data

.PHONY: run test test-fast install lock ocr-languages bench schemas clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The lock of `make install` (the project's dependencies and its test extra); the Docker image installs
# requirements/runtime.txt. Then the project itself: no dependency of its own (all in the lock), built by the
# lock's setuptools (no build isolation: that would fetch setuptools unpinned). `pip check` proves the lock whole.
LOCK := requirements/test.txt
$(VENV)/.installed: $(BIN)/python pyproject.toml $(LOCK) requirements/install.sh
	sh requirements/install.sh $(BIN)/pip $(LOCK) "$(TORCH_SPEC)"
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	@$(BIN)/pip check || { echo "pip check failed: the lock no longer covers pyproject.toml (or TORCH_SPEC's torch): run 'make lock' (decision 77)"; exit 1; }
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

# Regenerates the lock files from pyproject.toml and requirements/pins.in (decision 77; needs the package registry,
# about 10 minutes): requirements/test.txt (`make install`) and requirements/runtime.txt (the Docker image), each
# dependency pinned with the sha256 of every file of that release, resolved for Linux x86_64 and CPython 3.11 (the
# machines this runs on: markers for other platforms are evaluated here, not kept). Pins already in a lock are kept
# while pyproject allows them; PIP_COMPILE_ARGS=--upgrade (or --upgrade-package NAME) moves them. runtime.txt
# starts from test.txt's pins, so the image runs the versions the tests ran. tests/unit/test_lock.py fails while
# pyproject and the locks disagree. pip-tools lives in a venv of its own, so it never enters a lock.
LOCK_TOOLS := $(VENV)-lock
PIP_TOOLS_SPEC ?= pip-tools==7.6.2
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links --no-emit-trusted-host
$(LOCK_TOOLS)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install "$(PIP_TOOLS_SPEC)"
lock: $(LOCK_TOOLS)/bin/pip-compile
	$(PIP_COMPILE) $(PIP_COMPILE_ARGS) --extra test --output-file requirements/test.txt pyproject.toml requirements/pins.in
	cp requirements/test.txt requirements/runtime.txt
	$(PIP_COMPILE) --output-file requirements/runtime.txt pyproject.toml requirements/pins.in

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
	rm -rf $(VENV) $(LOCK_TOOLS) $(DATA_DIR)
