# radtrace: `make demo` and `make test` both set up .venv first (idempotent: a stamp file
# records that the install for this pyproject.toml is done, so a second run installs nothing).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.radtrace-installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 90

.PHONY: setup data demo test bench lint clean

setup: $(STAMP) data

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, from this machine's disk (pip's find-links); everything else after it.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@

data:
	@if [ ! -f $(FMNIST) ]; then \
	  if command -v apt-get >/dev/null; then \
	    echo "Fashion-MNIST missing: installing Debian's dataset-fashion-mnist"; \
	    $(SUDO) apt-get install -y -q dataset-fashion-mnist || \
	      { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }; \
	  else \
	    echo "Fashion-MNIST not found at $(FMNIST) and no apt-get: tests that need it will skip"; \
	  fi; \
	fi

demo: setup
	$(BIN)/radtrace demo

test: setup
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python -m bench.run

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
