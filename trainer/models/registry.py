"""Name -> constructor registry for the trainer's models."""

from __future__ import annotations

from typing import Callable

import torch

_REGISTRY: dict[str, Callable[..., torch.nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., torch.nn.Module]], Callable[..., torch.nn.Module]]:
    """Decorator: register a model class or factory under ``name``."""

    def wrap(factory: Callable[..., torch.nn.Module]) -> Callable[..., torch.nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def create_model(name: str, **kwargs) -> torch.nn.Module:
    """Build the model registered as ``name``; it records ``model_name`` and ``model_kwargs``."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    model = _REGISTRY[name](**kwargs)
    model.model_name = name
    model.model_kwargs = dict(kwargs)
    return model


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)
