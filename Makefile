# formnet: `make demo` runs a small local cluster doing real work; `make test` runs every test.
# Both set up what they need first (Debian packages, a virtual environment, Podman config).

VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: all test lint demo setup host venv base-image bench clean install uninstall

all: test

# Debian packages (podman, runc, busybox-static, the wasm32-wasi C toolchain, serf) and
# the Podman settings this machine needs; idempotent, quick when everything is there.
host:
	bash packaging/setup-host.sh

$(PY):
	python3 -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,plots]'
	touch $@

venv: $(STAMP)

setup: host venv

# One style, checked: pyflakes, pycodestyle, import order, and the formatter's layout.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(PY) -m simulations.demo

bench: setup
	$(PY) -m simulations.bench_placement
	$(PY) -m simulations.bench_executor

# The local base image jobs build FROM: busybox-static imported into Podman (no registry here).
base-image: setup
	$(PY) -m pack_manager.base_image

# A node: formnet in its own virtual environment (PREFIX, default /opt/formnet), formd and form
# in BINDIR (/usr/local/bin), the systemd unit, the Podman setup. Needs root. uninstall keeps
# the node's state (/var/lib/formd).
install:
	bash packaging/install.sh

uninstall:
	bash packaging/uninstall.sh

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
