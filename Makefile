# s2r: the two commands of the README.
#   make demo   — set up .venv (first run) and run the whole pipeline on the embedded sample city
#   make test   — set up .venv (first run) and run the full test suite
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test venv bench clean-demo

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "s2r needs Python 3.11 ($(PYTHON) not found; set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e ".[render,train,test,scaleout]"
	$(PY) -m pip install --quiet "pyarrow==25.0.1"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean-demo:
	rm -rf outputs/demo
