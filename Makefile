# `make demo` and `make test` each create the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

.PHONY: venv demo test
venv: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q
