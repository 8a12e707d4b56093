"""Pytest plugin for the core-only runs on Pythons without torch (tools/test-floors: `-p without_torch`).

A test module that cannot be imported because torch is missing is reported as skipped, with that reason, instead
of as a collection error; any other import error still fails the run.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest

REASON = "needs torch, which the core-only runs on Pythons other than 3.11 do not install"


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    if report.failed and isinstance(collector, pytest.Module) and "No module named 'torch'" in str(report.longrepr):
        report.outcome = "skipped"
        report.longrepr = (str(collector.path), 0, f"Skipped: {REASON}")
    return report
