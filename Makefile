# Two commands do all the set-up on a fresh machine with Python >= 3.10:
#   make app    create .venv, install, warm up what the first UMAP map compiles, prepare the default models and
#               maps in the disk cache (.app-cache/), start the Streamlit app
#   make test   create .venv, install with the test extras, lint (ruff), run the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8501
# torch is installed first and pinned: 2.13.0 resolves to the CPU wheel on the CI machine and never drags a
# multi-GB CUDA build in through another package's unpinned requirement.
TORCH ?= torch==2.13.0

.PHONY: app test install install-test bench clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	touch $@

# .test builds on .app (same install plus the test extras), so `make app` after `make test` finds .app up to date
# and neither reinstalls nor warms up again.
$(VENV)/.app: $(VENV)/.base pyproject.toml
	$(PY) -m pip install --quiet -e ".[app,dask]"
	$(PY) -m ui.warmup
	touch $@

$(VENV)/.test: $(VENV)/.app pyproject.toml
	$(PY) -m pip install --quiet -e ".[app,dask,test]"
	touch $@

install: $(VENV)/.app
install-test: $(VENV)/.test

app: $(VENV)/.app
	$(PY) -m ui.prepare  # digits MLP + logistic regression and their maps, into .app-cache/ (idempotent)
	$(PY) -m ui.serve --server.port $(PORT)  # = streamlit run app.py, importing the engine while it boots; settings: .streamlit/config.toml

test: $(VENV)/.test
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15  # two processes, each test file on one of them

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
