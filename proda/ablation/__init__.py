"""Ablation studies on Ray: spec → DAG of stage nodes (:mod:`.grid`), running it (:mod:`.runner`, the
only module that imports Ray) and tables of a study folder (:mod:`.results`).

Import the submodules directly; this package imports nothing heavy.
"""
