# Two entry points for a newcomer: `make demo` and `make test` (each sets up first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-slow lint docs bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/featuregeo demo --out featuregeo-demo

# The default suite: the import-layer contract, then the tests not marked slow.
test: setup
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

# The slow tests (CI's second step).
test-slow: setup
	$(PY) -m pytest -m "slow and not study"

lint: setup
	$(VENV)/bin/lint-imports

# The documentation site, offline and strict (warnings are errors); open site/index.html.
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict -q -d site

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf featuregeo-demo .pytest_cache site
