# make demo / make test do all set-up themselves: a virtualenv in .venv, PyTorch, then this package.
VENV        ?= .venv
PYTHON      ?= python3
# This machine class reaches PyPI only: its CPU torch (2.13.0+cpu) has no importable torchvision, which
# nnU-Net's trainer lookup needs (via timm). torch 2.14.1 + torchvision 0.29.1 install together and run on
# the CPU. With the PyTorch CPU index reachable, the leaner choice is in the README.
TORCH_SPEC  ?= torch==2.14.1 torchvision==0.29.1
STAMP       := $(VENV)/.installed
BIN         := $(VENV)/bin
WORK        ?= $(CURDIR)/work_dirs
NNUNET_ENV  := nnUNet_raw=$(WORK)/nnUNet_raw nnUNet_preprocessed=$(WORK)/nnUNet_preprocessed \
               nnUNet_results=$(WORK)/nnUNet_results nnUNet_compile=f nnUNet_def_n_proc=1

.PHONY: install test demo demo-full demo-federated benchmarks benchmarks-ablations benchmarks-quick learning-curve contrast-randomization clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(BIN)/pytest -q tests

demo: install
	$(NNUNET_ENV) PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

demo-full: install
	$(NNUNET_ENV) DEMO_TARGETS="952 953 954" PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo.sh

demo-federated: install
	$(NNUNET_ENV) PATH=$(CURDIR)/$(BIN):$$PATH bash scripts/demo_federated.sh

benchmarks: install
	$(BIN)/python -m benchmarks.run

benchmarks-ablations: install
	$(BIN)/python -m benchmarks.run --ablations all

benchmarks-quick: install
	$(BIN)/python -m benchmarks.run --quick

learning-curve: install
	$(BIN)/python -m benchmarks.studies.learning_curve

contrast-randomization: install
	$(BIN)/python -m benchmarks.studies.contrast_randomization

clean:
	rm -rf $(WORK)
