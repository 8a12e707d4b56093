"""Single source of the classy-hooks-core version (read by hatch and by the release tool)."""

__version__ = "1.0.0"
