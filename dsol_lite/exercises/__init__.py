"""Exercise solutions and checkers, one module per notebook (``ex00_*`` for notebook 00, ...)."""
