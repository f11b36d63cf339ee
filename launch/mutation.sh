#!/usr/bin/env bash
# Mutation testing (docs/testing.md, 'Mutation testing'): mutmut mutates the modules where
# a silent error corrupts results (setup.cfg [mutmut]) and runs the tests that reach each
# mutant; launch/mutation_score.py prints the score per module. Not part of CI: it takes
# hours on 2 cores for every group. Extra arguments are mutant-name patterns to run
# instead of every group's, e.g. 'csiloc_jax.mmwave.tracker.*'. MUTATION_SAMPLE=N runs a
# seeded uniform sample of N mutants per group (MUTATION_SEED, default 0) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,mutation]'
# Persistent XLA cache: a mutant changes one function, so the programs the tests compile
# from the others are found again instead of compiled afresh in every worker.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$PWD/mutants-xla-cache}"
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
if [ "$#" -gt 0 ]; then
  patterns=("$@")
elif [ -n "${MUTATION_SAMPLE:-}" ]; then
  # mutmut lists its mutants once it has generated them: the first run generates every
  # mutant, collects which tests reach which function, and runs a single mutant.
  .venv/bin/mutmut run 'csiloc_jax.csi.metrics.x_localization_metrics__mutmut_1' \
    > mutants.log 2>&1 || { tail -c 2000 mutants.log; exit 1; }
  mapfile -t patterns < <(.venv/bin/python launch/mutation_score.py \
    --sample "$MUTATION_SAMPLE" --seed "${MUTATION_SEED:-0}")
else
  mapfile -t patterns < <(.venv/bin/python -c 'import sys; sys.path.insert(0, "launch")
import mutation_score
print("\n".join(mutation_score.patterns()))')
fi
.venv/bin/mutmut run "${patterns[@]}" > mutants.log 2>&1 || { tail -c 2000 mutants.log; exit 1; }
.venv/bin/python launch/mutation_score.py --survivors
