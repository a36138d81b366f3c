"""One node of a chain (nodes.py) and the training loop that runs its stage (trainer.py).

The engine reports through a callback it is given and never imports Ray (DESIGN.md decision 2).
"""
