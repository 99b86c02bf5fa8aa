# The lab's two jobs: `make lab` (set up, get the data, run the quick sweep, open the dashboard)
# and `make test` (set up, run the whole test suite). Both start from a fresh virtual env;
# `make notebook` opens JupyterLab on notebooks/ in that env.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.14.1 / torchvision 0.29.1 are what this lab is tested with; newer is fine elsewhere:
# make TORCH="torch torchvision" lab
TORCH ?= torch==2.14.1 torchvision==0.29.1
RUNS ?= runs

.PHONY: lab install data sweep dashboard notebook test lint chromium

$(BIN)/lab: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $@

install: $(BIN)/lab

data: install
	$(BIN)/lab data prepare

sweep: data
	$(BIN)/lab sweep --preset quick --runs-root $(RUNS)

dashboard: install
	$(BIN)/streamlit run dashboard/app.py --server.address 127.0.0.1 -- --runs-root $(RUNS)

lab: sweep dashboard

# The notebooks' kernel, python3, is this env's (installed by the $(BIN)/lab rule above).
# JupyterLab refuses root without --allow-root (containers often run as root).
notebook: install
	$(BIN)/jupyter lab --notebook-dir notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Debian's Chromium for the browser tests (they are skipped where it cannot be installed).
chromium:
	@command -v chromium > /dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get > /dev/null \
		&& apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		> /dev/null; } || echo "chromium not installed: the browser tests will be skipped"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: install chromium lint
	$(BIN)/pytest
