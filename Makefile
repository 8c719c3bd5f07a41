# The two commands: `make demo` and `make test`.  Each sets itself up first.
.PHONY: setup test demo bench clean

ARGS ?=
PYTEST_ARGS ?= -q

setup:
	@bash scripts/setup_env.sh

test: setup
	@bash scripts/run_tests.sh $(PYTEST_ARGS)

demo: setup
	@.venv/bin/rt2-ros demo $(ARGS)

clean:
	rm -rf build demo_out .pytest_cache .hypothesis
