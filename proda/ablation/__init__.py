"""Ablation studies on Ray: spec → DAG of stage nodes (:mod:`.grid`), running it as one Tune experiment
(:mod:`.runner` and its searcher :mod:`.scheduler`, the two modules that import Ray) and tables of a study
folder (:mod:`.results`; example predictions in :mod:`.predictions`).

Import the submodules directly; this package imports nothing heavy.
"""
