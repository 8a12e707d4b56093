"""The reference trainer's config: JSON in, checked keys, `{run_dir}` and `$VAR` filled into string values only.

No text substitution on serialized JSON: values are walked after parsing, so a `"` or `\\` in a path
stays a character of that path, and an unset variable is an error naming the config key that uses it.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

DEFAULT_CONFIG: dict[str, Any] = {
    "seed": 0,
    "num_epochs": 2,
    "test_phase_period": 1,  # a test phase after every N train phases
    "test_only": False,
    "optimizer_period": 1,  # gradient accumulation: an optimizer step every N batches
    "model": {"name": "small_cnn"},  # other keys go to the model builder (e.g. "width")
    "dataset": {
        "num_classes": 10,
        "image_size": 32,
        "train_samples": 512,
        "test_samples": 128,
        "batch_size": 32,
        "noise": 1.0,
    },
    "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4},  # other keys go to torch.optim
    "lr_schedule": {"name": "cosine", "warmup_fraction": 0.0},
    "hooks": [],
    "skip_unavailable_hooks": False,
    "imports": [],
    # {"backend": "aot_eager", ...}: torch.compile(model, **options); base_model stays the plain module
    "compile": None,
    # true (under torchrun): FSDP2 fully_shard on each child block and the root instead of DDP
    "fsdp": False,
    # "auto" (CUDA when available, else CPU), "cpu" or "cuda"; under torchrun each rank takes cuda:LOCAL_RANK
    "device": "auto",
    # null, or {"dtype": "bfloat16" | "float16"}: torch.autocast on the device (GradScaler for float16 on CUDA)
    "amp": None,
}

#: sections whose extra keys pass through to a builder (the model, torch.optim), so any key is allowed there;
#: "compile" and "amp" default to null and are checked where they are used
OPEN_SECTIONS = frozenset({"model", "optimizer"})

_VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class ConfigError(ValueError):
    """A reference-trainer config that cannot be used: the message names the key path and the fix."""


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, dicts merged key by key (neither input is changed)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        out[key] = merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), dict) else value
    return out


def check_keys(config: Mapping[str, Any], defaults: Mapping[str, Any] = DEFAULT_CONFIG, path: str = "") -> None:
    """Raise ConfigError for a key that DEFAULT_CONFIG does not have (sections in OPEN_SECTIONS excepted)."""
    for key, value in config.items():
        key_path = f"{path}{key}"
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=3)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise ConfigError(
                f"reference trainer: unknown config key {key_path!r}.{hint} "
                f"Known keys{' of ' + repr(path[:-1]) if path else ''}: {', '.join(sorted(defaults))}."
            )
        if not path and key in OPEN_SECTIONS:
            continue
        if isinstance(value, Mapping) and isinstance(defaults[key], dict):
            check_keys(value, defaults[key], f"{key_path}.")


def substitute(value: Any, run_dir: str, environ: Mapping[str, str] | None = None, path: str = "") -> Any:
    """A copy of `value` with `{run_dir}` and `$VAR` / `${VAR}` replaced inside its strings (keys untouched).

    An unset variable raises ConfigError naming the key path (`hooks[6].port`) where it appears.
    """
    env = os.environ if environ is None else environ
    if isinstance(value, str):

        def variable(match: re.Match[str]) -> str:
            name = match.group("braced") or match.group("plain")
            if name not in env:
                raise ConfigError(
                    f"reference trainer: config value {path or '<root>'} = {value!r} uses ${name}, which is not set; "
                    f"export {name}=... before training, or change that value."
                )
            return env[name]

        return _VARIABLE.sub(variable, value.replace("{run_dir}", run_dir))
    if isinstance(value, Mapping):
        return {key: substitute(item, run_dir, env, f"{path}.{key}" if path else key) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [substitute(item, run_dir, env, f"{path}[{i}]") for i, item in enumerate(value)]
    return value


def apply_override(config: dict[str, Any], item: str) -> None:
    """`--set a.b=JSON`: set the nested key `a.b` of `config` (in place) to the parsed JSON value.

    The path must exist in DEFAULT_CONFIG up to its last key, or be inside an open section.
    """
    key_path, sep, text = item.partition("=")
    if not sep or not key_path:
        raise ConfigError(f"reference trainer: --set {item!r} must be KEY=JSON, e.g. --set dataset.batch_size=64.")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            f"reference trainer: --set {key_path}: {text!r} is not JSON ({error.msg}); quote strings, "
            f"e.g. --set {key_path}='\"value\"'."
        ) from None
    keys = key_path.split(".")
    override: dict[str, Any] = {keys[-1]: value}
    for key in reversed(keys[:-1]):
        override = {key: override}
    check_keys(override)
    target = config
    for depth, key in enumerate(keys[:-1]):
        existing = target.get(key)
        if existing is None:
            existing = target[key] = {}
        if not isinstance(existing, dict):
            raise ConfigError(
                f"reference trainer: --set {key_path}: {'.'.join(keys[: depth + 1])} is {existing!r}, not a section."
            )
        target = existing
    target[keys[-1]] = value


def load_config(path: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON config at `path` with each `--set KEY=JSON` of `overrides` applied, keys checked."""
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    if not isinstance(config, dict):
        raise ConfigError(f"reference trainer: {path} must hold a JSON object, got {type(config).__name__}.")
    check_keys(config)
    for item in overrides:
        apply_override(config, item)
    return config
