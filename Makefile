# openvla-vq. `make test` and `make demo` set everything up on a fresh machine.
# pip runs with --isolated: PyPI's torch 2.13.0 + torchvision 0.28.0 import together on CPU, while a
# machine-local find-links torch wheel would break torchvision (see ../shared/reference/ENVIRONMENT.md).

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip install --isolated --disable-pip-version-check
STAMP  := $(VENV)/.installed

.PHONY: help setup test demo bench-tokenizers clean

help:
	@echo "make test              set up .venv if needed, run the test suite"
	@echo "make demo              (not available yet: arrives with the end-to-end demo issue)"
	@echo "make bench-tokenizers  encode+decode throughput, binning vs VQ, batch 1024 on CPU"

setup: $(STAMP)

$(STAMP): setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) -q --upgrade pip setuptools wheel
	$(PIP) -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo:
	@echo "make demo is not available yet: the end-to-end demo (tokenizer -> fine-tune -> LIBERO rollout) arrives with a later issue."
	@echo "Today: 'make test' and 'make bench-tokenizers'."
	@exit 2

bench-tokenizers: $(STAMP)
	$(PY) bench/tokenizer_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
