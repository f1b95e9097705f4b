"""Emotion model families. Importing this package registers every family (no weights load)."""
from fer_ray.models import cnn, dexpression, landmarks, mini_xception, video  # noqa: F401  (registration side effect)
from fer_ray.models.registry import ModelSpec, create_model, get_spec, list_models, register_model

__all__ = ["ModelSpec", "create_model", "get_spec", "list_models", "register_model"]
