#!/usr/bin/env bash
# Snakemake runs this after creating the conda env of envs/environment.yaml (--use-conda): packages that must be
# installed without their dependencies (see requirements-nodeps.txt).
set -euo pipefail
pip install --no-deps -r "$(dirname "${BASH_SOURCE[0]}")/requirements-nodeps.txt"
