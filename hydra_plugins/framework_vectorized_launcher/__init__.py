"""The ``vectorized`` Hydra launcher: ``python -m framework -m hydra/launcher=vectorized ...``.

Hydra finds launchers only in the ``hydra_plugins`` namespace package; the work is done by
``framework.vectorized``.
"""
