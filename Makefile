# The README's two commands: `make demo` (set up + run the main job on the embedded data) and `make test`.
# Both work on a fresh clone with nothing installed, and re-running them with .venv present reinstalls nothing
# unless pyproject.toml changed (torch is never reinstalled: it is pinned and already satisfied).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs
PYTEST_ARGS ?=

.PHONY: demo test bench clean-venv help

help:
	@echo "make demo   - create $(VENV), install dlstudy, run 'dlstudy reproduce --quick' on the embedded digits data"
	@echo "make test   - create $(VENV), install dlstudy with test, cluster, tracking and export extras, run pytest"
	@echo "make bench  - run bench_metrics and bench_svm (--quick), bench_data, bench_train, bench_optim_step, bench_losses, bench_cluster (minutes; prints tables)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first and on its own: the pinned builds install from the machine's disk (~90 s) and are never reinstalled.
$(VENV)/.torch-installed: | $(BIN)/python
	$(BIN)/pip install --disable-pip-version-check -q "torch==2.14.1" "torchvision==0.29.1"
	@touch $@

$(VENV)/.dlstudy-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/pip install --disable-pip-version-check -q -e .
	@touch $@

# the cluster extra (ray, submitit: ~12 s, +250 MB) so the Ray and Slurm executor tests run for real; the tracking
# extra (tensorboard, mlflow: ~65 s, +400 MB) so tests/test_tracking.py reads the logs back with their own readers;
# the export extra (onnx, onnxscript, onnxruntime: ~10 s, +120 MB) so tests/test_export.py runs the ONNX files
$(VENV)/.dlstudy-test-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test,cluster,tracking,export]"
	@touch $@ $(VENV)/.dlstudy-installed

demo: $(VENV)/.dlstudy-installed
	$(BIN)/dlstudy reproduce --quick --out $(OUT)

test: $(VENV)/.dlstudy-test-installed
	MPLBACKEND=Agg $(BIN)/python -m pytest $(PYTEST_ARGS)

$(VENV)/.dlstudy-bench-installed: pyproject.toml $(VENV)/.torch-installed
	$(BIN)/pip install --disable-pip-version-check -q -e ".[test,bench,cluster]"
	@touch $@

# Each prints a table of ours vs the peer, measured in one run. Minutes in all; see README for the full sizes.
bench: $(VENV)/.dlstudy-bench-installed
	$(BIN)/python benchmarks/bench_metrics.py --quick
	$(BIN)/python benchmarks/bench_svm.py --quick
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_optim_step.py
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_cluster.py

clean-venv:
	rm -rf $(VENV)
