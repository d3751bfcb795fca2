# hooklab: `make run` serves the dashboard, `make test` runs every test, `make lint` runs the
# style gate (ruff, then mypy on hooklab/; both must be clean, CI runs it before the tests).
# Both create the virtual environment in .venv first when it is missing, and install hooklab
# into it (editable, `pip install -e .` via requirements.txt) with its `hooklab` command.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.hooklab-installed
PORT ?= 8501

.PHONY: run test test-fast lint bench clean-venv

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m streamlit run dashboard/app.py --server.port $(PORT)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not e2e"

lint: $(STAMP)
	$(VENV)/bin/ruff check hooklab dashboard tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_record.py

clean-venv:
	rm -rf $(VENV)
