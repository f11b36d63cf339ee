#!/usr/bin/env bash
# Sets up a virtual environment (.venv) with the package and its test extra, then runs
# the test suite. "No tests collected" (pytest exit code 5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test,raytrace]'
# Sionna RT's CPU backend loads an LLVM shared library at run time; install one from the
# system's packages when it is missing or too old (raytracer.MIN_LLVM) and we can (root
# with apt, as on CI).
USABLE='from csiloc_jax.core import raytracer; raytracer.require()'
if ! .venv/bin/python -c "$USABLE" >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -q libllvm19 >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null && apt-get install -y -q libllvm19 >/dev/null; }
  fi
  .venv/bin/python -c "$USABLE" \
    || { echo "Sionna RT cannot start: install an LLVM library (apt-get install libllvm19)" >&2; exit 1; }
fi
set +e
.venv/bin/python -m pytest -q "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "no tests were collected: failing" >&2; exit 1; fi
exit "$rc"
