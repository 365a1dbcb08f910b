# Quick start: `make run` starts the room chat, `make test` runs the whole suite.
# Both create .venv and install what they need; both are fast when nothing changed.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8080
STAMP  := $(VENV)/.installed
# A second environment with trionos installed from a built wheel, not from the source tree:
# examples/tests run there to prove that a plain `pip install trionos` is enough for the plugin.
DIST   ?= .venv-dist
DIST_STAMP := $(DIST)/.installed
SOURCES := $(shell find trionos -name '*.py' -o -name 'py.typed')

.PHONY: run test lint bench autobahn redis-server chromium clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,redis]'
	@touch $(STAMP)

# The Redis tests need a real redis-server; install it when missing (CI runs as root).
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "installing redis-server with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server >/dev/null; }

# The browser test drives Debian's chromium through Playwright (executable_path; Playwright's own
# browser download is never used): install chromium when missing, the same way.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing chromium with apt-get"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

run: $(STAMP)
	$(BIN)/python examples/room_chat.py --host $(HOST) --port $(PORT)

$(DIST_STAMP): pyproject.toml $(SOURCES)
	@test -x $(DIST)/bin/python || $(PYTHON) -m venv $(DIST)
	$(DIST)/bin/python -m pip install -q --upgrade pip
	$(DIST)/bin/python -m pip install -q '.[test]'
	$(DIST)/bin/python -m pip install -q --force-reinstall --no-deps .
	@touch $(DIST_STAMP)

test: $(STAMP) $(DIST_STAMP) redis-server chromium
	$(BIN)/ruff check trionos tests examples bench
	$(BIN)/python -m pytest -q
	cd examples/tests && ../../$(DIST)/bin/pytest -q .

lint: $(STAMP)
	$(BIN)/ruff check trionos tests examples bench

bench: $(STAMP)
	$(BIN)/python -m pip install -q -e '.[bench]'
	$(BIN)/python bench/run.py --chart docs/img/performance.png

# Autobahn|Testsuite (not part of `make test`): every case, compression off and on. wstest is
# Python 2.7 code; ../shared/autobahn/setup_wstest.sh builds it into WSTEST_DIR when missing.
WSTEST_DIR ?= $(or $(TMPDIR),/tmp)/wstest
autobahn: $(STAMP)
	PYTHON=$(abspath $(BIN)/python) WSTEST_DIR=$(WSTEST_DIR) bench/autobahn.sh

clean:
	rm -rf $(VENV) $(DIST) build *.egg-info .pytest_cache .hypothesis
