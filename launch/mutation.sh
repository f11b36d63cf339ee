#!/usr/bin/env bash
# Mutation testing (docs/testing.md, 'Mutation testing'): mutmut mutates the modules where
# a silent error corrupts results (setup.cfg [mutmut]) and runs the tests that reach each
# mutant; launch/mutation_score.py prints the score per module. Not part of CI: it takes
# about an hour on 2 cores. Extra arguments are mutant-name patterns to run instead of
# every group's, e.g. 'csiloc_jax.mmwave.tracker.*'.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,mutation]'
if [ "$#" -gt 0 ]; then
  patterns=("$@")
else
  mapfile -t patterns < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "launch")
import mutation_score
print("\n".join(mutation_score.patterns()))')
fi
.venv/bin/mutmut run "${patterns[@]}" > mutants.log 2>&1 || { tail -c 2000 mutants.log; exit 1; }
.venv/bin/python launch/mutation_score.py --survivors
