# The two commands of the README; each sets up what is missing first (see mrimaster.sh, which
# does the work and runs without make too: ./mrimaster.sh run | test | check).
#   make run                 set up and start the web app (ARGS="--port 8001" for serve's options)
#   make test                set up, ruff, mypy, the whole test suite
#   make test PYTEST_ARGS="tests/test_side_effects.py -x"   only part of it
#   make pytest PYTEST_ARGS=...   the tests without ruff and mypy
#   make check               hadolint, checkov, the API reference (CI runs `check` and `test`)
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test pytest check setup
run:
	@bash ./mrimaster.sh run $(ARGS)
test:
	@bash ./mrimaster.sh test $(PYTEST_ARGS)
pytest:
	@bash ./mrimaster.sh pytest $(PYTEST_ARGS)
check:
	@bash ./mrimaster.sh check
setup:
	@bash ./mrimaster.sh setup
