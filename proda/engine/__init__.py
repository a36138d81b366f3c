"""The training loop, checkpoints with every RNG state, and DDP helpers that are no-ops in one process.

The engine reports through a callback it is given and never imports Ray (DESIGN.md decision 2).
"""
