"""Variance-reduced solvers for regularised linear ERM (DASVRDA, Prox-SVRG, Katyusha): the
maths, apart from the method seam (``methods/dasvrda.py``). ``losses``: φ, φ', prox;
``rows``: dense and CSR rows; ``problem``: P on this rank's rows; ``solvers``: the stage
machines and their defaults; ``kernels``: the same loops compiled with numba;
``certificate``: a certified reference optimum."""
