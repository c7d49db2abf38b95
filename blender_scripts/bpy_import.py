"""Single import point for bpy: fails with an error that says how to install it."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BpyMissingError", "import_bpy", "INSTALL_HINT"]

INSTALL_HINT = 'pip install -e ".[render]"  (installs bpy==5.0.1 and OpenEXR; needs Python 3.11)'


class BpyMissingError(ImportError):
    pass


def import_bpy() -> ModuleType:
    """Import and return ``bpy``; raise :class:`BpyMissingError` naming the fix if unavailable."""
    try:
        return importlib.import_module("bpy")
    except ImportError as e:
        raise BpyMissingError(f"Blender's Python module 'bpy' is not importable ({e}); install the render extra: {INSTALL_HINT}") from e
