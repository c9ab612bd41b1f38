"""``sluice bench``: the virtual-time benchmark matrix (docs/benchmarks.md).

``spec``: the matrix file. ``policies``: Sluice's policies and the bench-only oracle.
``capacity``: a fleet's capacity for a workload. ``point``: one run (policy, workload, fleet,
load, seed) in the virtual-time fleet. ``aggregate``: means, 95% confidence intervals and ratios
across seeds. ``plots`` and ``report``: PNG figures and the HTML report. ``runner``: the whole
matrix, in parallel processes when asked, with a progress bar.
"""
