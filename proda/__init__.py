"""proda — ProDA (Zhang et al., CVPR 2021) and a Ray runner for its ablation studies.

The core (everything but :mod:`proda.ablation`) never imports Ray.
"""

__version__ = "0.1.0"
