# Two commands do all the set-up on a fresh machine (Python 3 and make are all it needs):
#   make notebooks   execute every notebook into build/notebooks (GPU parameters if CUDA is available)
#   make test        run the test suite, notebooks and lint included (CPU parameters)
PYTHON     ?= python3
VENV       := .venv
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.flexfix-installed
LOCK       := requirements.lock
UV_VERSION := 0.13.9
EXTRAS     := notebooks,test,repro
comma      := ,
# `make lock` refreshes requirements.lock from pyproject.toml, keeping today's pins where they still fit;
# `make lock UPGRADE=1` takes the newest versions that fit.
LOCK_CMD   := uv pip compile pyproject.toml $(addprefix --extra ,$(subst $(comma), ,$(EXTRAS))) --universal \
              --python-version 3.11 -o $(LOCK)

.PHONY: install notebooks test test-gpu lab lock clean book

install: $(STAMP)

# The exact lock, installed with uv (pinned; faster than pip, see README), falling back to pip if uv cannot be
# installed or fails. --no-deps: the lock is the whole environment. --compile-bytecode, as pip does: every child
# process imports torch and vLLM, twice as fast from bytecode.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	( $(BIN)/python -m pip install --quiet uv==$(UV_VERSION) \
	  && $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python --no-deps -r $(LOCK) -e . ) \
	|| $(BIN)/python -m pip install --quiet --no-deps -r $(LOCK) -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name flexfix --display-name "Python (flexfix)"
	touch $(STAMP)

notebooks: $(STAMP)
	MPLBACKEND=agg $(BIN)/flexfix notebooks --out build/notebooks

# pytest-xdist: the tests run on every core (-n auto; PYTEST_WORKERS=0 runs them in this process), each notebook
# still executed once (tests/conftest.py); worksteal: an idle worker takes tests queued for a busy one, as a few
# tests take minutes and most take well under a second. The timing bounds (marker `alone`) run after, in a pytest
# of their own, from the one file that holds them (tests/conftest.py refuses them elsewhere): inside the parallel run
# one waited, with its core idle, for the other worker's test to end (34 s).
PYTEST_WORKERS ?= auto
test: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal -m "not gpu and not alone"
	MPLBACKEND=agg $(BIN)/python -m pytest -m "alone and not gpu" tests/test_copy_speed.py

# On a GPU box only (never in CI): the notebooks with GPU parameters, then the GPU verdicts (tests/test_gpu.py).
test-gpu: $(STAMP)
	MPLBACKEND=agg $(BIN)/python -m pytest -m gpu tests/test_gpu.py

# The published notebooks (data/notebooks, written by `flexfix publish`) as a static HTML book, offline.
book: $(STAMP)
	MPLBACKEND=agg $(BIN)/flexfix book --src data/notebooks --out build/book

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks

lock: $(STAMP)
	$(BIN)/$(LOCK_CMD) $(if $(UPGRADE),--upgrade)

clean:
	rm -rf build
