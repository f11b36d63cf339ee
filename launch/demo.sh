#!/usr/bin/env bash
# Sets up a virtual environment (.venv) with the package, then runs the main job on the
# built-in default: generate a small synthetic CTW-layout dataset, pretrain and fine-tune
# the paper's four models, print Table I and the label-efficiency table, write plots.
# Usage: bash launch/demo.sh [WORKDIR]   (default runs/demo; re-running resumes)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
.venv/bin/python launch/compare.py --workdir="${1:-runs/demo}"
