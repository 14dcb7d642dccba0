# recon: two commands on a fresh Debian/Ubuntu machine with Python 3.11.
#   make run    create .venv, install the pinned requirements, start the app on http://127.0.0.1:7860
#   make test   the same install plus the test extras, then pytest
#   make bench  the time-to-quality benchmark (see README)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
export GRADIO_ANALYTICS_ENABLED ?= False
export PIP_DISABLE_PIP_VERSION_CHECK = 1

.PHONY: run test bench lint clean

run: $(VENV)/.installed
	$(PY) app.py

test: $(VENV)/.installed-test
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m recon.bench $(BENCH_ARGS)

$(PY):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] >= (3, 11), "recon needs Python 3.11"' \
	  || { echo "recon needs Python 3.11 (found $(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "Could not create $(VENV): on Debian/Ubuntu run 'apt-get install python3.11-venv'"; exit 1; }
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed: requirements.txt | $(PY)
	$(PY) -m pip install -r requirements.txt
	touch $@

$(VENV)/.installed-test: requirements-test.txt $(VENV)/.installed
	$(PY) -m pip install -r requirements-test.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache runs
