"""Tiny ImageNet CNN lab: data, models, trainer and run records."""

__version__ = "0.1.0"
