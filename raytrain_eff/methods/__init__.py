"""Efficient-training methods, one module per paper, plus the baselines; pure PyTorch.

Nothing here imports ray. ``raytrain_eff.catalog`` is the registry; ``registry.create``
builds a method from its validated hyper-parameters.
"""
