"""The benchmark harness (``python -m intersection_meta.bench``): meta-train every (algorithm, seed) of a suite in
parallel and report the comparison.

``runner`` trains the runs in worker processes, ``report`` turns their metrics into results.csv and report.md,
``plots`` draws the learning curves; the command line is :mod:`intersection_meta.cli.bench`.
"""
