"""classy-hooks-logging."""

from classy_hooks.logging._version import __version__

__all__ = ["__version__"]
