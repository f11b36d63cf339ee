"""Loading, overriding and saving ml_collections configs without absl flags.

Launchers get their config from ``config_flags.DEFINE_config_file``; notebooks and tests
call :func:`load_config` with the same ``path[:arg]`` string, so both paths build the
config through the file's ``get_config`` and nothing here reads ``absl.flags``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
from typing import Any, Mapping, TypeVar

import ml_collections

from csiloc_jax.core import runs

_Options = TypeVar('_Options')


def load_config(spec: str, overrides: Mapping[str, Any] | None = None) -> ml_collections.ConfigDict:
  """Builds the config named by ``spec`` = ``path/to/config.py[:arg]``.

  ``overrides`` maps dotted field names to values, exactly like ``--config.a.b=v`` on the
  command line; an unknown field raises a ``KeyError`` naming it.
  """
  path, _, arg = spec.partition(':')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'config file {path!r} does not exist (from spec {spec!r})')
  module_name = '_csiloc_config_' + os.path.splitext(os.path.basename(path))[0]
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, 'get_config'):
    raise AttributeError(f'config file {path!r} defines no get_config()')
  config = module.get_config(arg) if arg else module.get_config()
  # Locked like the launchers' --config: a misspelt field is an error, not a new field.
  config.lock()
  return apply_overrides(config, overrides or {})


def apply_overrides(
  config: ml_collections.ConfigDict, overrides: Mapping[str, Any]
) -> ml_collections.ConfigDict:
  """Sets dotted fields, refusing names that do not already exist in the config."""
  for dotted, value in overrides.items():
    *parents, leaf = dotted.split('.')
    node = config
    for i, name in enumerate(parents):
      if name not in node:
        raise KeyError(
          f'config has no field {".".join(parents[: i + 1])!r} (while overriding {dotted!r})'
        )
      node = node[name]
    if leaf not in node:
      raise KeyError(f'config has no field {dotted!r}; fields here: {sorted(node.keys())}')
    node[leaf] = value
  return config


def config_to_dict(config: ml_collections.ConfigDict) -> dict:
  """A plain-JSON view of a config (placeholders that are unset become ``None``)."""
  return json.loads(config.to_json_best_effort())


def write_config(config: ml_collections.ConfigDict, workdir: str) -> str:
  """Writes ``workdir/config.json`` atomically and returns its path."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'config.json')
  runs.write_json(path, config_to_dict(config))
  return path


def options_from_config(
  cls: type[_Options], section: Mapping[str, Any], source: str = 'config', **extra: Any
) -> _Options:
  """Builds the option dataclass ``cls`` from a config section.

  The config files are the one source of defaults: ``cls`` declares fields without
  defaults, every one of them must be in ``section`` (or ``extra``), and fields of the
  section that ``cls`` does not declare are ignored. Lists become tuples so options stay
  hashable (they are static arguments of compiled functions).
  """
  kwargs = {}
  for field in dataclasses.fields(cls):
    if field.name in extra:
      value = extra[field.name]
    elif field.name in section:
      value = section[field.name]
    else:
      raise KeyError(
        f'{source} has no field {field.name!r}, which {cls.__name__} needs; '
        f'fields there: {sorted(section.keys())}'
      )
    kwargs[field.name] = tuple(value) if isinstance(value, list) else value
  return cls(**kwargs)
