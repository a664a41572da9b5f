# mediatok: `make demo` and `make test` each create .venv first (about two minutes, once).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv browser test demo notebooks bench lint format clean

venv: $(STAMP)

# The report page's browser test (tests/test_report.py) drives Debian's Chromium, which a fresh
# machine lacks: installed here when missing (apt, as root or through sudo; about a minute).
# MEDIATOK_CHROMIUM names another Chromium to use instead.
browser:
	@command -v chromium >/dev/null 2>&1 || [ -n "$$MEDIATOK_CHROMIUM" ] || { \
		sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
		$$sudo apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq chromium >/dev/null; }

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: venv browser
	$(BIN)/ruff check src tests benchmarks tools notebooks
	$(BIN)/ruff format --check src tests benchmarks tools notebooks
	$(BIN)/python -m pytest -q

demo: venv
	$(BIN)/python -m mediatok.demo

# Run every notebook top to bottom in a fresh kernel and write its outputs back (what is
# committed); a few minutes each on a CPU.
notebooks: venv
	$(BIN)/python notebooks/execute.py

bench: venv
	$(BIN)/python benchmarks/search.py
	$(BIN)/python benchmarks/quantize.py
	$(BIN)/python benchmarks/image_tokenizer.py
	$(BIN)/python benchmarks/audio_codec.py
	$(BIN)/python benchmarks/generation.py
	$(BIN)/python benchmarks/video_codec.py
	$(BIN)/python benchmarks/flextok.py

lint: venv
	$(BIN)/ruff check src tests benchmarks tools notebooks

format: venv
	$(BIN)/ruff format src tests benchmarks tools notebooks
	$(BIN)/ruff check --fix src tests benchmarks tools notebooks

clean:
	rm -rf $(VENV) demo-output bench-output notebook-output
