"""The package imports no optional dependency, and a hook whose extra is missing says how to install it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers import subprocess_env

OPTIONAL = ("tensorboardX", "tensorboard", "visdom", "fvcore")


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env())
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_import_pulls_in_no_optional_dependency_and_names_resolve_through_entry_points() -> None:
    out = _run(
        "import sys, json\n"
        "from classy_hooks.core import build_hook\n"
        "names = ['loss_lr_meter_logging', 'progress_bar', 'profiler']\n"
        "built = [type(build_hook({'name': n})).__name__ for n in names]\n"
        "import classy_hooks.logging\n"
        f"print(json.dumps([built, [m for m in {OPTIONAL!r} if m in sys.modules]]))\n"
    )
    built, imported = json.loads(out)
    assert built == ["LossLrMeterLoggingHook", "ProgressBarHook", "ProfilerHook"]
    assert imported == []


# Blocks imports with a sys.meta_path finder: the module looks uninstalled to the hook.
BLOCKED = """
import sys, json
BLOCK = set()
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCK:
            raise ImportError(f"{name} is blocked in this test")
sys.meta_path.insert(0, Block())
from classy_hooks.core import MissingExtraError, build_hook
out = []
for block, configs in SCENARIOS:
    BLOCK.clear(); BLOCK.update(block)
    result = {}
    for config in configs:
        try:
            build_hook(config)
            result[config["name"]] = "built"
        except MissingExtraError as exc:
            result[config["name"]] = str(exc)
    out.append(result)
print(json.dumps(out))
"""


@pytest.mark.slow
def test_hooks_whose_extra_is_missing_raise_importerror_with_the_pip_line() -> None:
    configs = [
        {"name": "tensorboard_plot", "summary_writer": {"logdir": "unused"}},
        {"name": "model_tensorboard", "summary_writer": {"logdir": "unused"}},
        {"name": "visdom", "server": "http://127.0.0.1", "port": 8097},
        {"name": "model_complexity"},
        {"name": "loss_lr_meter_logging"},
        {"name": "progress_bar"},
        {"name": "profiler"},
    ]
    # 2nd scenario: only `tensorboard` missing. add_graph goes through torch.utils.tensorboard,
    # which needs it, so ModelTensorboardHook asks for it although tensorboardX is there.
    scenarios = [(sorted(OPTIONAL), configs), (["tensorboard"], configs[:2])]
    everything_missing, tensorboard_missing = json.loads(_run(f"SCENARIOS = {scenarios!r}\n" + BLOCKED))
    assert everything_missing["loss_lr_meter_logging"] == "built"
    assert everything_missing["progress_bar"] == everything_missing["profiler"] == "built"
    for name, extra in [
        ("tensorboard_plot", "tensorboard"),
        ("model_tensorboard", "tensorboard"),
        ("visdom", "visdom"),
        ("model_complexity", "complexity"),
    ]:
        assert f"pip install 'classy-hooks-logging[{extra}]'" in everything_missing[name], everything_missing[name]
    assert tensorboard_missing["tensorboard_plot"] == "built"
    assert "needs the 'tensorboard' package" in tensorboard_missing["model_tensorboard"]
    assert "pip install 'classy-hooks-logging[tensorboard]'" in tensorboard_missing["model_tensorboard"]
