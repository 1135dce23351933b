"""Every method on the same domains, splits and seeds, side by side (``aecfe-compare``, ``scripts/compare.py``).

* :mod:`~aecfe.comparison.steps` — a step is one command line run in a child process; its wall time and peak
  memory are measured and recorded, and a finished step is never run again (resumable).
* :mod:`~aecfe.comparison.plan` — the steps of the comparison (extraction, autoencoders, heads, deep baselines).
* :mod:`~aecfe.comparison.report` — gathers every method's scores into one Markdown report with figures.
"""
