# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # mmWave localization quickstart
#
# mmWave localization with self-supervised tiny networks (docs/mmwave.md): JADE turns
# unlabelled angle-difference-of-arrival measurements of a survey into position labels
# and an anchor map, one tiny network per region learns from them, and on a trajectory
# a Kalman filter picks at every step which network (or the per-step fit to JADE's map)
# to trust.
#
# This notebook generates a scenario on a built-in floor (or reads your `survey.h5` and
# `trajectory.h5`), runs `mmwave.train.train_and_evaluate` and shows the method table,
# JADE's map, the tracked trajectory and the error CDFs inline. A few minutes on a free
# Colab CPU.
#
# Text form: `notebooks/mmwave_quickstart.py` (jupytext, percent format) is the reviewed
# source; the `.ipynb` beside it is generated from it with outputs stripped.

# %% Install: the package and its configs from a local checkout or a git URL.
import importlib.util
import os
import subprocess
import sys

# A checkout of this repository (the folder holding setup.cfg), or a git URL to clone.
CHECKOUT = os.environ.get('CSILOC_CHECKOUT', '')
REPO_URL = os.environ.get('CSILOC_REPO_URL', '')
if not CHECKOUT:
  here = os.path.abspath('..')
  if os.path.exists(os.path.join(here, 'setup.cfg')):
    CHECKOUT = here  # Opened from notebooks/ inside a checkout.
  elif REPO_URL:
    CHECKOUT = os.path.abspath('csiloc_jax_checkout')
    if not os.path.isdir(CHECKOUT):
      subprocess.check_call(['git', 'clone', '--depth=1', REPO_URL, CHECKOUT])
  else:
    raise RuntimeError(
      'set CSILOC_CHECKOUT to a checkout of this repository or CSILOC_REPO_URL to its git '
      'URL (e.g. os.environ["CSILOC_REPO_URL"] = "https://.../csiloc_jax.git") and rerun'
    )
if importlib.util.find_spec('csiloc_jax') is None:
  subprocess.check_call([sys.executable, '-m', 'pip', 'install', '-q', '-e', CHECKOUT])
CONFIGS = os.path.join(CHECKOUT, 'configs')
print('checkout:', CHECKOUT)

# %% Runtime and scenario: sized for the backend.
import jax

from csiloc_jax.core import config_utils

BACKEND = jax.default_backend()
# CSILOC_NOTEBOOK_SIZE=ci: the smallest run that exercises every cell (the test suite).
SIZE = os.environ.get('CSILOC_NOTEBOOK_SIZE') or ('cpu' if BACKEND == 'cpu' else 'accelerator')
print(f'backend {BACKEND} with {jax.device_count()} device(s): size {SIZE!r}')
SURVEY, TRAJECTORY = '', ''  # Your files (docs/schemas.md), or '' to generate a scenario.
FLOOR = 'two_rooms' if SIZE == 'ci' else ''  # '' = the default floor; or a built-in name.
overrides = {
  'data.survey': SURVEY,
  'data.trajectory': TRAJECTORY,
  'data.floorplan': FLOOR,
}
if SIZE == 'ci':
  overrides.update(
    {
      'data.num_survey': 60,
      'data.num_trajectory_steps': 60,
      'nets.num_train_steps': 200,
      'nets.eval_every': 100,
      'big_nn.num_train_steps': 100,
      'big_nn.eval_every': 100,
    }
  )
config = config_utils.load_config(
  os.path.join(CONFIGS, 'mmwave_tiny.py' + (':quick' if SIZE != 'accelerator' else '')), overrides
)
WORKDIR = os.path.abspath(os.environ.get('CSILOC_NOTEBOOK_WORKDIR', 'runs/mmwave_quickstart'))

# %% JADE, the tiny nets, tracking and evaluation.
from csiloc_jax.mmwave import train

metrics = train.train_and_evaluate(config, WORKDIR)

# %% [markdown]
# ## Every method on the trajectory

# %%
from IPython.display import Image
from IPython.display import Markdown
from IPython.display import display

rows = ['| method | sub-metre | median (m) | p90 (m) |', '|---|---|---|---|']
for name, m in metrics['methods'].items():
  p90 = m['p90_m']
  rows.append(
    f'| {name} | {100 * m["submeter_fraction"]:.1f} % | {m["median_m"]:.2f} | '
    f'{"n/a" if p90 is None else f"{p90:.2f}"} |'
  )
display(Markdown('\n'.join(rows)))
print('headline:', metrics['trajectory']['method'])

# %% [markdown]
# ## JADE's map: survey labels and anchors, against the floor

# %%
display(Image(os.path.join(WORKDIR, 'floor.png')))

# %% [markdown]
# ## The tracked trajectory and the error CDFs

# %%
display(Image(os.path.join(WORKDIR, 'trajectory.png')))
display(Image(os.path.join(WORKDIR, 'error_cdf.png')))
