"""Declarative lifecycle controller for vector-search indexes under embedding drift."""

__version__ = "0.1.0"
