# The two commands a new user runs: `make run` and `make test`. Both create .venv from the pinned
# requirements when it is missing (or when the requirements changed), then install svalign into it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= $(shell nproc)  # every core of this machine; `make run CORES=N` to change
SNAKEMAKE_ARGS ?=

.PHONY: run test lint format unit venv dry-run report readme-assets docs perf-docs clean

venv: $(VENV)/.installed

$(VENV)/.installed: envs/requirements.txt envs/requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile -r envs/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-compile --no-deps -r envs/requirements-nodeps.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	@# pip byte-compiles on one core (62 s); compileall on every core (32 s on 2). Files written for other Pythons
	@# (torch's py312_intrinsics.py) fail to compile, as under pip, hence `|| true`.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib >/dev/null 2>&1 || true
	touch $@

run: venv
	$(BIN)/snakemake --cores $(CORES) $(SNAKEMAKE_ARGS)
	$(MAKE) --no-print-directory report

report: venv
	$(BIN)/snakemake --report results/report.html $(SNAKEMAKE_ARGS)
	@echo "report: $(abspath results/report.html); results table: $(abspath results/report/claims.md)"

# The README's generated assets, from a finished run: the results table and thumbnails of key figures.
README_FIGURES := toy/alignment_multi_pair dynamics/sad_over_training
readme-assets: venv
	cp results/report/claims.md docs/results.md
	$(BIN)/python -c 'import sys; from svalign.figures.canvas import thumbnail; [thumbnail(f"results/figures/{f}.png", "docs/img/" + f.replace("/", "_") + ".png") for f in sys.argv[1:]]' $(README_FIGURES)

# Generated documentation. `docs`: docs/configuration.md from the config schema (a test checks it is current).
# `perf-docs`: runs every benchmark with --json into $(PERF_DIR) (minutes each; run it on a quiet
# machine), then docs/performance.md from those files and the last run's rule logs (run `make run` first).
# PERF_BASELINE=<another run's results/logs> (and PERF_BASELINE_LABEL) puts that run beside this one per stage.
PERF_DIR ?= results/perf
PERF_BASELINE ?=
PERF_BASELINE_LABEL ?= baseline
docs: venv
	$(BIN)/python -m svalign.docgen configuration > docs/configuration.md.tmp
	mv docs/configuration.md.tmp docs/configuration.md

perf-docs: venv
	mkdir -p $(PERF_DIR)
	$(BIN)/python benchmarks/toy_batched.py --json $(PERF_DIR)/toy_batched.json
	$(BIN)/python benchmarks/toy_sweep.py --json $(PERF_DIR)/toy_sweep.json
	$(BIN)/python benchmarks/toy_step.py --json $(PERF_DIR)/toy_step.json
	$(BIN)/python benchmarks/sad.py --json $(PERF_DIR)/sad.json
	$(BIN)/python benchmarks/svd.py --json $(PERF_DIR)/svd.json
	$(BIN)/python benchmarks/scale.py --json $(PERF_DIR)/scale.json
	$(BIN)/python benchmarks/dry_run.py --json $(PERF_DIR)/dry_run.json
	$(BIN)/python -m svalign.docgen performance --benchmarks $(PERF_DIR) --logs results/logs \
		$(if $(PERF_BASELINE),--baseline $(PERF_BASELINE) --baseline-label "$(PERF_BASELINE_LABEL)") > docs/performance.md.tmp
	mv docs/performance.md.tmp docs/performance.md

dry-run: venv
	$(BIN)/snakemake -n --cores $(CORES) $(SNAKEMAKE_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --cores 1

unit: venv
	$(BIN)/pytest --durations=10

test: lint unit

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
	$(BIN)/snakefmt Snakefile workflow/rules

clean:
	rm -rf results .snakemake
