# mediatok: `make demo` and `make test` each create .venv first (about two minutes, once).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint format clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: venv
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/python -m mediatok.demo

bench: venv
	$(BIN)/python benchmarks/search.py
	$(BIN)/python benchmarks/quantize.py
	$(BIN)/python benchmarks/image_tokenizer.py
	$(BIN)/python benchmarks/audio_codec.py
	$(BIN)/python benchmarks/generation.py

lint: venv
	$(BIN)/ruff check src tests benchmarks tools

format: venv
	$(BIN)/ruff format src tests benchmarks tools
	$(BIN)/ruff check --fix src tests benchmarks tools

clean:
	rm -rf $(VENV) demo-output bench-output
