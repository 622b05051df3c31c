# The two commands of the README, and the few around them. Everything a fresh machine needs is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)
PG_TEST_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install run test bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

# Migrate, load the LLMFAO demo into an empty database, publish a first leaderboard snapshot if there is none,
# serve on http://127.0.0.1:$${ARENA_PORT:-8000} with the snapshot builder beside gunicorn (`arena serve`: it
# restarts the builder if it dies). A bad ARENA_* setting stops the first command with one line.
run: install
	$(BIN)/arena db upgrade
	$(BIN)/arena demo load --if-empty
	$(BIN)/arena snapshot --if-none
	$(BIN)/arena serve

# ruff (its rules in pyproject.toml) fails the run on an unused or undefined name, a misordered import, or a file
# that `ruff format` would change (run `.venv/bin/ruff format .` to fix the last).
# The dependency audit fails the run on a known vulnerability and warns when the advisory service cannot be asked.
# The suite runs on SQLite, and on PostgreSQL too whenever a server answers on 127.0.0.1:5432. The browser tests
# drive Debian's chromium (installed here when missing; playwright's own browser download is not used) and stay on
# one xdist worker (--dist loadgroup), which starts their server once.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/audit_dependencies.py
	@test -x /usr/bin/chromium || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
		|| echo "chromium could not be installed: the browser tests will be skipped"; }
	@if [ -z "$$ARENA_TEST_DATABASE_URL" ] && $(BIN)/python -c "import socket; socket.create_connection(('127.0.0.1', 5432), 1)" 2>/dev/null; then \
		export ARENA_TEST_DATABASE_URL="$(PG_TEST_URL)"; fi; \
	$(BIN)/python -m pytest -n $${ARENA_TEST_WORKERS:-auto} --dist loadgroup

# Benchmarks need the peers we measure against; they are never dependencies of the package.
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,bench]'
	test -x bench/results/venv-arena-rank/bin/python || { $(PYTHON) -m venv bench/results/venv-arena-rank && \
		bench/results/venv-arena-rank/bin/pip install --quiet --disable-pip-version-check arena-rank; }
	$(BIN)/python bench/ranking.py
	$(BIN)/python bench/service.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
