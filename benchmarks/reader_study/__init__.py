"""A blinded reader study: radiologists score images in a browser without knowing which were processed.

``python -m benchmarks.reader_study`` has three subcommands (docs/READER_STUDY.md):

- ``prepare`` renders each case x arm (original, medclear at a strength or with another model,
  non-local means) to windowed PNGs under random opaque ids and writes the study manifest
  (``prepare.py``, ``arms.py``, ``render.py``, ``manifest.py``);
- ``serve`` runs the scoring web app (``app.py``, ``server.py``, ``static/``), with answers in
  SQLite (``store.py``) and each reader's randomised order (``schedule.py``);
- ``analyze`` exports the answers and writes the report (``analyze.py``, ``report.py``).

Nothing here imports torch: the medclear arms run through ``runtime.pipeline``.
"""
