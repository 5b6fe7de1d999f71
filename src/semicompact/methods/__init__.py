"""Training methods (supervised, self-training, consistency regularisation, distillation)."""

from .base import Method, get_method, list_methods, method_class, register_method, run_method

__all__ = ["Method", "get_method", "list_methods", "method_class", "register_method", "run_method"]
