# Two commands do all the set-up on a fresh machine (Python 3 and make are all it needs):
#   make notebooks   execute every notebook into build/notebooks (GPU parameters if CUDA is available)
#   make test        run the test suite, notebooks included (CPU parameters)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.flexfix-installed

.PHONY: install notebooks test lab clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name flexfix --display-name "Python (flexfix)"
	touch $(STAMP)

notebooks: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m flexfix.run_notebooks --out build/notebooks

test: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

clean:
	rm -rf build
