# Two commands for a fresh machine: `make run` starts the app, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PORT ?= 8501

.PHONY: run test install install-test bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PIP) install -q -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

run: install
	VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow $(VENV)/bin/streamlit run app.py \
		--server.port $(PORT) --server.fileWatcherType none --browser.gatherUsageStats false

# Two workers, one test file each at a time (a file's module fixtures, e.g. the browser test's app server, start
# once), since most tests run torch at one thread: pytest took 233 s so on a 2-core AMD EPYC, 398 s as one
# process (`pytest -q tests`).
test: install-test
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: install
	$(PY) bench/bench_core.py

clean:
	rm -rf $(VENV) .pytest_cache
