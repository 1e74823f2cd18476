"""Efficient-training methods, one module per paper, plus the baselines; pure PyTorch.

Nothing here imports ray. ``raytrain_eff.catalog`` is the one registry: it names each method's
hyper-parameter dataclass and implementation, and ``catalog.create_methods`` builds them.
"""
