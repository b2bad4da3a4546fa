# Two entry points for a newcomer: `make demo` and `make test` (each sets up first).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench clean
setup:
	@bash scripts/setup.sh

demo: setup
	$(VENV)/bin/featuregeo demo --out featuregeo-demo

test: setup
	$(PY) -m pytest

bench: setup
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf featuregeo-demo .pytest_cache
