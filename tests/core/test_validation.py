"""Argument checks shared by all hook packages: what they accept and how their errors read."""

from __future__ import annotations

import math

import pytest

from classy_hooks.core import HookConfigError
from classy_hooks.core import validation as v


def test_check_int_accepts_ints_and_rejects_bools_floats_and_small_values() -> None:
    assert v.check_int("H", "n", 3, minimum=1) == 3
    for bad in (True, 2.0, "3"):
        with pytest.raises(HookConfigError, match=r"H: argument 'n' must be an int"):
            v.check_int("H", "n", bad)
    with pytest.raises(HookConfigError, match=r"H: argument 'n' must be >= 1, got 0. Pass an int of at least 1"):
        v.check_int("H", "n", 0, minimum=1)
    assert v.check_optional_int("H", "n", None, minimum=1) is None


def test_check_float_range_and_finiteness() -> None:
    assert v.check_float("H", "decay", 1, low=0, high=1) == 1.0
    for bad in (1.5, -0.1):
        with pytest.raises(HookConfigError, match=r"must lie in \[0, 1\]"):
            v.check_float("H", "decay", bad, low=0, high=1)
    for bad in (math.nan, math.inf, "0.5", None, False):
        with pytest.raises(HookConfigError, match="must be a finite number"):
            v.check_float("H", "decay", bad)


def test_check_bool_str_choice() -> None:
    assert v.check_bool("H", "flag", False) is False
    with pytest.raises(HookConfigError, match="must be a bool"):
        v.check_bool("H", "flag", "false")
    with pytest.raises(HookConfigError, match="must not be empty"):
        v.check_str("H", "folder", "")
    with pytest.raises(HookConfigError, match="must be a str"):
        v.check_str("H", "folder", 12)
    with pytest.raises(HookConfigError, match=r"must be one of 'cpu', 'gpu', got 'tpu'"):
        v.check_choice("H", "device", "tpu", ("cpu", "gpu"))


def test_check_subset() -> None:
    assert v.check_subset("H", "phase_types", ("test", "train"), {"train", "test"}) == ["test", "train"]
    with pytest.raises(HookConfigError, match="must not be empty"):
        v.check_subset("H", "phase_types", [], {"train"})
    with pytest.raises(HookConfigError, match=r"has unknown values \['val'\]"):
        v.check_subset("H", "phase_types", ["val"], {"train", "test"})
    with pytest.raises(HookConfigError, match="must be a list of strings"):
        v.check_subset("H", "phase_types", "train", {"train"})


def test_check_plain_data_names_the_offending_path() -> None:
    good = {"lr": 0.1, "tags": ["a", None], "nested": {"ok": True}}
    assert v.check_plain_data("H", "input_args", good) is good
    with pytest.raises(HookConfigError, match=r"argument 'input_args\['nested'\]\['fn'\]' holds"):
        v.check_plain_data("H", "input_args", {"nested": {"fn": print}})
    with pytest.raises(HookConfigError, match="non-string key 1"):
        v.check_plain_data("H", "input_args", {1: "x"})
