"""Mixed Sparsity Training (Hu, Li, Huang; arXiv 2408.11746): dynamic sparse training whose
sparsity varies over the run, plus hybrid sparse attention.

Weight W_l of each sparse layer carries a binary mask M_l (a buffer on its module): weights
outside the mask are exactly 0, their gradients are masked, and the forward always sees
W_l ⊙ M_l. The target sparsity s(t) follows three phases — warm-up (0 → s), ultra-sparse
(hold s), restoration (s → 0) — and per-layer densities d_l(t) come from Erdős–Rényi(-Kernel)
or uniform allocation so that Σ d_l n_l = (1 − s(t)) Σ n_l. Every ΔT steps (topology update)::

    a_l = |M_l|,  k_l = round(d_l(t) n_l)           active now, active wanted
    D = max(round(ζ_t a_l), a_l − k_l)              prune D smallest |W| among active
    G = k_l − (a_l − D)                             regrow G > D in restoration
    grow ⌊share·G⌉ by largest |∇W| (dense gradient of this step), the rest uniformly at random
    new weights start at 0; optimizer moments of every changed entry are reset to 0

ζ_t is cosine-annealed from ζ_0 to 0; restoration completes on the step s(t) reaches 0, even
between multiples of ΔT. A head tied to the embedding shares its weight, hence its mask. Scores
are all-reduced over the data-parallel group and random growth is seeded by (seed, step, layer),
so every rank takes the same decisions.

Under model shards (FSDP2, ``scaling.strategy=fsdp``) each weight is a DTensor and its mask
lives on the local shard only: masking, gradient masking, moment resets and density all
work on ``to_local()`` slices. A topology update gathers one layer's |W|, scores and mask at a
time (the prune/grow choice is a top-k over the whole layer) and keeps the local slice of the
result, so the decisions are the ones ddp takes.

Accounting (``FlopCounter``): per training forward, a linear layer on R rows with n weights at
density ρ costs 2Rnρ (forward) + 2Rnρ (dX, when its input needs a gradient) + 2Rnρ (dW; 2Rn on
gradient-growth steps, which need the dense gradient); an embedding costs Rdρ adds for its
scatter-add dW; attention costs 12·B·C·P for P (query, key) pairs of touched kernel tiles
(QKᵀ and AV forward, four matmuls backward).

Modules: ``topology`` (the sparse weights, per-layer densities, prune-and-grow), ``flops``
(the analytic counter), ``method`` (the seam); the DTensor slices are ``blocks.dtensor``,
the schedules ``methods/schedules.py`` and the attention ``methods/sparse_attention.py``.
"""
