"""Tables and plots, one module per report; no training and no measuring here.

- `figures`: matplotlib figures on their own Agg canvas (no pyplot), image formats, rendering.
- `study_tables`, `study`: a study's table and analyses, and its report folder (``results.json``,
  ``table.md``, plots), plus the curves of any runs (``experiments.plot_runs``).
- `gradient_flow`: the table, JSON record and plot of `jaxrnn.gradient_flow` measurements.
- `text_quality`: the table and plot of the sampling study (`jaxrnn.text_quality`).
"""
