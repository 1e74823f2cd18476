"""Variance-reduced solvers for regularised linear ERM (DASVRDA, Prox-SVRG, Katyusha): the
maths, apart from the method seam (``methods/dasvrda.py``). ``problem``: P on this rank's
rows; ``solvers``: the stage machines and their defaults; ``kernels``: the same loops
compiled with numba; ``certificate``: a certified reference optimum. The losses φ, φ', prox
and the dense and CSR rows are ``blocks.erm_losses`` and ``blocks.rows`` (the ``erm`` task
shares them)."""
