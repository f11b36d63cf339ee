"""The tree keeps the formatter and linter configuration of pyproject.toml.

``ruff format .`` and ``ruff check --fix .`` fix what these tests report.
"""

import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _ruff() -> str:
  beside_python = os.path.join(os.path.dirname(sys.executable), 'ruff')
  path = beside_python if os.path.exists(beside_python) else shutil.which('ruff')
  assert path, 'ruff is missing: install the test extra (pip install -e ".[test]")'
  return path


@pytest.mark.parametrize('args', [('check',), ('format', '--check')], ids=['lint', 'format'])
def test_ruff_is_clean(args):
  result = subprocess.run([_ruff(), *args, REPO], capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 0, result.stdout + result.stderr
