"""Sparse deltas of full-model runs: export the changed entries against the base, apply them back bit-exactly."""

from .apply import BaseMismatchError, apply_delta, read_manifest
from .export import export_delta

__all__ = ["BaseMismatchError", "apply_delta", "export_delta", "read_manifest"]
