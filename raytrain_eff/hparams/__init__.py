"""Hyper-parameter dataclasses of every method and task, free of torch so configs validate fast.

Each method's dataclass holds exactly what a Tune space may search.
"""
