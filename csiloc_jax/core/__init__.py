"""The small core both systems stand on; it imports neither of them.

* ``config_utils``: ml_collections configs loaded by path, overridden by dotted names,
  saved as ``config.json``; option dataclasses built from a config section.
* ``checkpointing``: every orbax call, behind one class.
* ``metric_writer``: absl + JSONL metric lines, the log file, the one progress reporter.
* ``parallel``: the data-parallel wrapper (pmap or jit(shard_map)) over any step function.
* ``runs``: atomic JSON files, fingerprints, and the record of a finished stage.
* ``plots``: headless figure saving and the error CDF.
"""
