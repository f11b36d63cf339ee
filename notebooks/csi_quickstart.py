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
# # CSI localization quickstart
#
# Self-supervised CSI localization (docs/csi.md): autoencoders pretrained on unlabelled
# massive-MIMO CSI, fine-tuned with a position head on few labels, next to the classic
# baselines (training mean, kNN on amplitude and on the spatial covariance).
#
# This notebook generates a small CTW-2020-layout set (or reads yours), trains the
# paper's four models through `csi.compare.run_comparison` (one
# `train.train_and_evaluate` per model and label budget) and shows Table I, the
# label-efficiency plot and the predicted positions inline. On a free Colab CPU it
# finishes in a few minutes; on a GPU or TPU runtime it uses a larger set.
#
# Text form: `notebooks/csi_quickstart.py` (jupytext, percent format) is the reviewed
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

# %% Runtime: TPU, GPU or CPU, and a run sized for it.
import jax

from csiloc_jax.core import config_utils

BACKEND = jax.default_backend()
# CSILOC_NOTEBOOK_SIZE=ci: the smallest run that exercises every cell (the test suite).
SIZE = os.environ.get('CSILOC_NOTEBOOK_SIZE') or ('cpu' if BACKEND == 'cpu' else 'accelerator')
SIZES = {
  # labelled, unlabelled, subcarriers, pretraining / fine-tuning epochs, label budgets
  'ci': (120, 120, 8, 2, 2, (40,)),
  'cpu': (600, 1200, 16, 10, 15, (100, 300)),
  'accelerator': (2000, 8000, 64, 40, 60, (100, 300, 1000)),
}
labelled, unlabelled, subcarriers, pre_epochs, ft_epochs, budgets = SIZES[SIZE]
print(f'backend {BACKEND} with {jax.device_count()} device(s): size {SIZE!r}')

WORKDIR = os.path.abspath(os.environ.get('CSILOC_NOTEBOOK_WORKDIR', 'runs/csi_quickstart'))
DATA_ROOT = ''  # Point at a CTW-2020 folder to use real data instead of the generated set.
config = config_utils.load_config(
  os.path.join(CONFIGS, 'ctw_compare.py:quick'),
  {
    'data.root': DATA_ROOT,
    'data.synthetic.num_labelled': labelled,
    'data.synthetic.num_unlabelled': unlabelled,
    'data.synthetic.num_subcarriers': subcarriers,
    'pretrain.num_epochs': pre_epochs,
    'finetune.num_epochs': ft_epochs,
    'compare.label_budgets': budgets,
  },
)

# %% Train and evaluate: the four paper models, then the label-efficiency sweep.
from csiloc_jax.csi import compare

summary = compare.run_comparison(config, WORKDIR)

# %% [markdown]
# ## Table I (test split), with the classic baselines on the same split

# %%
from IPython.display import Image
from IPython.display import Markdown
from IPython.display import display

display(Markdown(summary['table1_markdown']))

# %% [markdown]
# ## Label efficiency: test MAE against the number of labelled samples

# %%
with open(os.path.join(WORKDIR, 'label_efficiency.md')) as f:
  display(Markdown(f.read()))
display(Image(os.path.join(WORKDIR, 'label_efficiency.png')))

# %% [markdown]
# ## Predicted against true positions (Model 4, test split)

# %%
display(Image(os.path.join(WORKDIR, 'model4', 'positions_xy.png')))
display(Image(os.path.join(WORKDIR, 'error_cdf.png')))
