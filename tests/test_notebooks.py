"""The quickstart notebooks: the reviewed text form and the .ipynb agree, outputs are
stripped, and each notebook runs top to bottom (nbclient, a real Jupyter kernel) at the
smallest size (``CSILOC_NOTEBOOK_SIZE=ci``) on the CPU."""

import os

import jupytext
import nbclient
import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(REPO, 'notebooks')
NAMES = ('csi_quickstart', 'mmwave_quickstart')


def _sources(nb):
  return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize('name', NAMES)
def test_ipynb_matches_its_text_form_and_has_no_outputs(name):
  text = jupytext.read(os.path.join(NOTEBOOKS, f'{name}.py'))
  stored = nbformat.read(os.path.join(NOTEBOOKS, f'{name}.ipynb'), as_version=4)
  assert _sources(stored) == _sources(text), (
    f'notebooks/{name}.ipynb is out of date: run jupytext --sync notebooks/{name}.py'
  )
  for cell in stored.cells:
    if cell.cell_type == 'code':
      assert not cell.outputs and cell.execution_count is None, 'outputs must be stripped'


@pytest.mark.parametrize('name', NAMES)
def test_notebook_runs_top_to_bottom(name, tmp_path, monkeypatch):
  # The kernel inherits this environment: the smallest size, this checkout, a workdir.
  monkeypatch.setenv('CSILOC_NOTEBOOK_SIZE', 'ci')
  monkeypatch.setenv('CSILOC_CHECKOUT', REPO)
  monkeypatch.setenv('CSILOC_NOTEBOOK_WORKDIR', str(tmp_path / 'run'))
  nb = nbformat.read(os.path.join(NOTEBOOKS, f'{name}.ipynb'), as_version=4)
  client = nbclient.NotebookClient(
    nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': NOTEBOOKS}}
  )
  client.execute()  # Raises CellExecutionError, with the cell and traceback, on failure.
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.outputs]
  assert not [o for o in outputs if o.output_type == 'error']
  images = [o for o in outputs if 'image/png' in o.get('data', {})]
  markdown = '\n'.join(
    o['data']['text/markdown'] for o in outputs if 'text/markdown' in o.get('data', {})
  )
  assert len(images) >= 3, f'expected the plots inline, got {len(images)} images'
  if name == 'csi_quickstart':
    assert '| knn_covariance | baseline |' in markdown and '| model4 | CNN | MLP |' in markdown
  else:
    assert '| switching_nis |' in markdown and '| jade_alone |' in markdown
