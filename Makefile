# Two commands for a newcomer: `make study` (the main job) and `make test` (the suite).
# Both create .venv and install the project into it first: pip install -c constraints.txt -e ".[test]"
# (constraints.txt pins every package but torch's own, so a fresh clone gets the versions CI passed with;
# `make constraints` rewrites it from a fresh resolve).
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= data
SHARED_CIFAR = ../shared/datasets/cifar10.py

.PHONY: install study test constraints

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -c constraints.txt -e ".[test]"
	touch $@

constraints: install
	$(VENV)/bin/python .ci/constraints.py

# The quick study on CIFAR-10. Offline machines that have ../shared/datasets/cifar10.py build the data
# from it; elsewhere cifarbench downloads the official archive into $(DATA).
study: install
	@if [ ! -d $(DATA)/cifar-10-batches-py ] && [ -f $(SHARED_CIFAR) ]; then $(VENV)/bin/python $(SHARED_CIFAR) $(DATA); fi
	$(VENV)/bin/cifarbench study --preset quick --data-dir $(DATA)

test: install
	$(VENV)/bin/python -m pytest -q
