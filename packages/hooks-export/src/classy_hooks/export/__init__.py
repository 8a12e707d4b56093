"""classy-hooks-export."""

from classy_hooks.export._version import __version__

__all__ = ["__version__"]
