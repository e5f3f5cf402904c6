"""Public names of bayesbeam's packages: lazy top-level exports, and old module paths for one release.

``lazy_exports`` lets ``from agent import xas_agent`` work without importing every technique (and
numba) on ``import agent.core.stopping``. ``alias_moved_modules`` keeps the flat module paths of
release 0.1 (``agent.mcs_agent`` …) importable with a ``DeprecationWarning`` naming the new one.
"""

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], object], Callable[[], list]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps a public name to the module
    (relative to ``package``, e.g. ``".compton"``) that defines it; imported on first access."""

    def __getattr__(name: str):
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module, package), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list:
        return sorted({*vars(sys.modules[package]), *exports})

    return __getattr__, __dir__


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Import hook: an old module path gives a module holding the new module's names."""

    def __init__(self):
        self.moved: dict[str, str] = {}

    def find_spec(self, fullname, path=None, target=None):
        if fullname in self.moved:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return None

    def exec_module(self, module):
        new = self.moved[module.__name__]
        warnings.warn(f"{module.__name__} moved to {new}; the old path goes in the next release",
                      DeprecationWarning, stacklevel=2)
        target = importlib.import_module(new)
        module.__dict__.update({k: v for k, v in vars(target).items() if not k.startswith("__")})
        module.__doc__ = f"Deprecated alias of {new}."


_FINDER = _MovedModules()


def alias_moved_modules(moved: Mapping[str, str]) -> None:
    """Register ``{old dotted path: new dotted path}`` with the import hook (installed once)."""
    _FINDER.moved.update(moved)
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
