"""classy-hooks-model."""

from classy_hooks.model._version import __version__

__all__ = ["__version__"]
