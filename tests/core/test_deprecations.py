"""quiet_jit_deprecations hides TorchScript's deprecation notices of any category, and nothing else."""

from __future__ import annotations

import warnings

from classy_hooks.core.deprecations import quiet_jit_deprecations


def test_only_jit_deprecation_notices_are_hidden() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with quiet_jit_deprecations():
            warnings.warn(
                "`torch.jit.trace` is deprecated. Please switch to torch.export.", FutureWarning, stacklevel=1
            )
            warnings.warn("`torch.jit.script` is deprecated.", DeprecationWarning, stacklevel=1)
            warnings.warn("Converting a tensor to a Python boolean", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["Converting a tensor to a Python boolean"]
