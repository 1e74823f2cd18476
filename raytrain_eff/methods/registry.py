"""Turn a validated config's ``methods`` mapping into Method objects, in hook order."""
from __future__ import annotations

from typing import Any

from raytrain_eff import catalog
from raytrain_eff.methods.base import Method


def create(name: str, params: Any) -> Method:
    cls = catalog.load_object(catalog.lookup(catalog.METHODS, "method", name).impl)
    method = cls(params)
    method.name = name
    return method


def create_all(methods: dict[str, Any]) -> list[Method]:
    return [create(name, params) for name, params in methods.items()]
