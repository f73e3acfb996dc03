"""Import hook that teaches a stock LLaMA-Factory the ``losia`` fine-tuning method.

``losia_factory.pth`` (installed into site-packages with the package) imports this module at interpreter start-up in
every process of the environment: ``llamafactory-cli``, torchrun children, the web UI and its training subprocess. It
is deliberately cheap (no torch, no llamafactory import): it only registers a finder that, when one of the
LLaMA-Factory modules listed in ``PATCHES`` finishes loading, calls the matching function of
``losia_factory.llamafactory.patches`` on it. Set ``LOSIA_FACTORY_DISABLE=1`` to switch it off.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.abc import MetaPathFinder

DISABLE_ENV = "LOSIA_FACTORY_DISABLE"

# Loaded module -> patch function in losia_factory.llamafactory.patches (its PATCHED_SYMBOLS lists them).
PATCHES = {
    "llamafactory.hparams.finetuning_args": "patch_finetuning_args",
    "llamafactory.hparams.parser": "patch_parser",
    "llamafactory.model.adapter": "patch_adapter",
    "llamafactory.train.trainer_utils": "patch_trainer_utils",
    "llamafactory.extras.constants": "patch_constants",
    "llamafactory.webui.locales": "patch_webui_locales",
    "llamafactory.webui.components.train": "patch_webui_train",
    "llamafactory.webui.runner": "patch_webui_runner",
}


def _apply(fullname: str, module) -> None:
    patches = importlib.import_module("losia_factory.llamafactory.patches")
    getattr(patches, PATCHES[fullname])(module)


class _PatchingLoader:
    """Wraps a module's real loader and patches the module right after it has executed."""

    def __init__(self, loader, fullname: str) -> None:
        self._loader = loader
        self._fullname = fullname

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _apply(self._fullname, module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class LosiaPatchFinder(MetaPathFinder):
    """Finds the modules in ``PATCHES`` through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        return None


def is_disabled() -> bool:
    return os.environ.get(DISABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def install() -> bool:
    """Register the finder (once) and patch the target modules already imported. Returns whether it is active."""
    if is_disabled():
        return False
    if not any(isinstance(f, LosiaPatchFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, LosiaPatchFinder())
    for fullname in PATCHES:
        module = sys.modules.get(fullname)
        if module is not None:
            _apply(fullname, module)
    return True


def is_installed() -> bool:
    return any(isinstance(f, LosiaPatchFinder) for f in sys.meta_path)


install()
