"""Sublinear-time training of wide shifted-ReLU networks (arXiv 2208.04508).

Deng, Hu, Song, Weinstein, Zhuo: "Training Overparametrized Neural Networks in Sublinear Time".

The network is f(x) = (1/√m) Σ_r a_r·σ_b(⟨w_r, x⟩) with σ_b(z) = max(z − b, 0), a_r fixed.
With unit-norm x and b = √(0.4·ln m) only S(x) = {r : ⟨w_r, x⟩ > b}, about m^0.8 neurons,
fire; an inactive neuron gets no gradient, so a step changes few w_r. Per step on a batch B::

    S_i   = index.query(x_i)                          # active set, cost ∝ |S_i|, not m
    f_i   = (1/√m) Σ_{r∈S_i} a_r (⟨w_r, x_i⟩ − b)
    e_i   = f_i − y_i                                 # (B·∂ℓ/∂f for ℓ = mean ½‖f − y‖²)
    first order:   w_r ← w_r − η·∂ℓ/∂w_r,  ∂ℓ/∂w_r = (1/√m) Σ_{i: r∈S_i} ⟨a_r, ∂ℓ/∂f_i⟩ x_i
    Gauss-Newton:  G = J Jᵀ,  G_(c,i),(c',j) = (1/m) ⟨x_i, x_j⟩ Σ_{r∈S_i∩S_j} a_rc a_rc'
                   z = (G + λI)⁻¹ e,   w_r ← w_r − η (1/√m) Σ_{i: r∈S_i} ⟨a_r, z_i⟩ x_i
    index.update(U)                                   # U = neurons that changed, only those

Three ways to find S_i: ``MaxTreeIndex`` (exact: per training input a fan-out-f max-tree over
the keys ⟨w_r, x_i⟩, maintained for changed neurons only), ``HyperplaneLSH`` (approximate:
random-hyperplane hashing of the lifted w̃_r = [w_r; √(M² − ‖w_r‖²)], rehashing touched
neurons only; misses are measured as recall) and the dense GEMM + mask reference.

Width sharding: each rank hosts a contiguous slice of the neurons with its own index; the
partial outputs are all-reduced, and the Gram matrix is a sum over neurons, so it is too.

Modules: the layer itself is ``blocks/shifted_relu.py`` (the ``wide`` task builds it);
``index`` holds the two indexes, ``optimizers`` the two updates, ``method`` the seam.
"""
