# The README's two commands: `make serve` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NODE_STAMP := node_modules/.installed-stamp
TS := clients/ts
TS_STAMP := $(TS)/node_modules/.installed-stamp
TS_BUILT := $(TS)/dist/index.js

.PHONY: serve test install lint typecheck unit ts-test

$(STAMP): pyproject.toml proto/python/pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./proto/python -e ./clients/python -e '.[dev,loadtest]'
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# clients/ts (@wedsync/client) has its own package.json and lockfile: the SDK, its demo page
# (served at / by a development node) and its tests (vitest, playwright-core).
$(TS_STAMP): $(TS)/package.json $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(TS_BUILT): $(TS_STAMP) $(TS)/tsconfig.json $(TS)/scripts/build-demo.mjs $(wildcard $(TS)/src/*.ts $(TS)/demo/*)
	cd $(TS) && npm run --silent build
	touch $@

install: $(STAMP) $(NODE_STAMP) $(TS_BUILT)

serve: $(STAMP) $(TS_BUILT)
	$(BIN)/gateway serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) $(TS_STAMP)
	$(BIN)/mypy gateway clients/python/gateway_client proto/python/wedsync_protocol loadtest
	cd $(TS) && npm run --silent typecheck

unit: install
	$(BIN)/pytest $(PYTEST_ARGS)

# The SDK's vitest projects: unit (proto/vectors), node (real `gateway serve`), browser
# (Debian's Chromium via playwright-core; fails when there is none: apt-get install chromium).
ts-test: install
	cd $(TS) && npm test --silent

test: lint typecheck ts-test unit
