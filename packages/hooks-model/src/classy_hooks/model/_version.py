"""Single source of the classy-hooks-model version (read by hatch and by the release tool)."""

__version__ = "0.1.0"
