"""Command-line entry points, apart from the pipeline stages they drive.

``train`` (meta-train, then evaluate), ``evaluate`` (held-out evaluation of a checkpoint), ``scenarios``
(list/show/validate/sample scenario files) and ``bench`` (the benchmark harness). Each module has ``main(argv)``
returning an exit status: 0 on success, 2 with a one-line ``error:`` on bad input. ``python -m
intersection_meta.train`` (and ``.evaluate``, ``.scenarios``, ``.bench``) and the ``intersection-meta-*`` console
scripts run them.
"""
