# containment-gateway — `make run` to try it, `make test` to check it. Both work from a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

MOCK_PORT    ?= 8000
LISTEN       ?= 127.0.0.1:8080
ADMIN_LISTEN ?= 127.0.0.1:8081
DEV_TOKENS   ?= dev:commander:dev-commander-token

.PHONY: install run test lint format clean test-services load soak

install: $(STAMP)

# The modules setup.py compiles with mypyc (rules/_build.py): an edit to one of them rebuilds.
COMPILED_SOURCES := $(shell sed -n 's/^    "\([a-z_.]*\)",$$/\1/p' rules/_build.py | tr . / | sed 's/$$/.py/')

$(STAMP): pyproject.toml setup.py rules/_build.py $(COMPILED_SOURCES)
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "containment-gateway needs Python >= 3.11 (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# The gateway on the embedded store (policy under ./.containment) in front of the bundled mock model.
run: install
	@$(BIN)/containment mock-upstream --port $(MOCK_PORT) & mock=$$!; \
	trap 'kill $$mock 2>/dev/null' EXIT INT TERM; \
	echo "containment: admin token for this demo: $(DEV_TOKENS)"; \
	CONTAINMENT_ADMIN_TOKENS="$${CONTAINMENT_ADMIN_TOKENS:-$(DEV_TOKENS)}" \
	$(BIN)/containment serve --upstream http://127.0.0.1:$(MOCK_PORT) \
		--listen $(LISTEN) --admin-listen $(ADMIN_LISTEN)

# Locust, headless and bounded (DURATION=20s USERS=20): steady, streaming and multi-tenant traffic plus
# an incident drill; prints the time from the responder's push to zero harmful responses.
load: install
	$(BIN)/python -m pip install --quiet -e '.[load]'
	./loadtests/run.sh

# A bounded soak (SOAK_SECONDS=180 by default, capped at 600): two fleet replicas on one redis-server under
# clean traffic, rule pushes, kill switches and key floods while redis-server is SIGKILLed and restarted
# (some restarts empty). Prints one line per counter; fails on any restriction lifted or store-caused 5xx.
SOAK_SECONDS ?= 180
soak: install
	SOAK_SECONDS=$(SOAK_SECONDS) $(BIN)/python loadtests/soak.py

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# What the suite runs besides Python: redis-server (the fleet tests start their own, on free ports) and
# promtool (checks /metrics), from Debian's packages where they are missing.
test-services:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing (apt-get)"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } \
		|| { echo "the test suite needs:$$missing (apt-get install$$missing)"; exit 1; }; \
	fi

# Lint, then the whole suite twice: on the mypyc-compiled build, as it ships, and on the pure-Python
# sources, as it runs without a C compiler (or with CONTAINMENT_COMPILE=0). pytest's exit code 5 ("no
# tests collected") is a failure here, on purpose.
test: lint test-services
	$(BIN)/python -m pytest -q
	CONTAINMENT_PURE_PYTHON=1 $(BIN)/python -m pytest -q -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build rules/_compiled.json
	find . -name '*.so' -not -path './$(VENV)/*' -delete
