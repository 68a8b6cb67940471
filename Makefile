# miascale: `make demo` runs the embedded default job, `make test` runs the test suite.
# Both create/update the virtual environment, install the package with pinned dependencies and
# obtain the data they need (Debian packages, installed when missing and we are root on Debian).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.miascale-installed
# CPU build of torch, pinned in the same pip command as everything that depends on it.
TORCH  := torch==2.13.0
DEB_PACKAGES := dataset-fashion-mnist wordnet-base
PYTEST_ARGS ?=

.PHONY: demo test install data browser lint bench docs clean

demo: install data
	$(BIN)/miascale demo

test: install data browser
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing on purpose" >&2; exit 1; fi; \
	exit $$rc

install: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c requirements/constraints.txt $(TORCH) -e '.[dev,ray]'
	touch $(STAMP)

# Debian data packages: install the missing ones when we can (root + apt-get); otherwise say how.
data:
	@missing=""; \
	[ -d /usr/share/datasets/fashion-mnist ] || missing="$$missing dataset-fashion-mnist"; \
	[ -f /usr/share/wordnet/data.noun ] || missing="$$missing wordnet-base"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian data packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run 'sudo apt-get install$$missing'," \
	         "or see 'miascale data list' for other ways to get the data)" >&2; \
	  fi; \
	fi

# Debian's chromium for the report's browser test (tests/test_report_browser.py; skipped without it
# outside CI, a failure in CI).
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian package: chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "chromium is missing (run 'sudo apt-get install chromium'); the report's browser" \
	         "test is skipped" >&2; \
	  fi; \
	fi

lint: install
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

docs: install data
	$(BIN)/python scripts/probe_table.py --out docs/linear-probe.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
