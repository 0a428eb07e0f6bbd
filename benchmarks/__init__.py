"""Timings of this project against its peers, in one process, reported as ratios.

`python -m benchmarks` runs the whole suite; `python -m benchmarks.core`,
`python -m benchmarks.attention`, `python -m benchmarks.pairwise` and `python -m benchmarks.model`
run one table each. `python -m benchmarks.optimisers` runs geoopt's Riemannian optimisers on this
library's ball and on geoopt's own, from far-out starts (convergence, not timing).
"""
