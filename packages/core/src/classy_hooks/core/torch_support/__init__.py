"""Torch code the hook packages share (classy-hooks-model, -logging, -export), kept once here.

Every module of this subpackage imports torch, which classy-hooks-core does not declare: it is
used by the hook packages, which require torch. The torch-free modules of core never import it
(an import-linter contract in the root pyproject.toml checks that), so `import classy_hooks.core`
stays torch-free. This file imports nothing.
"""
