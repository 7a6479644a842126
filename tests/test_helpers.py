"""The shared test helpers that decide whether a test runs at all."""

from __future__ import annotations

import pytest

from tests.helpers import require_tools

ABSENT = "mintca-no-such-tool"


@pytest.mark.parametrize(
    ("ci", "outcome"),
    [
        pytest.param("true", pytest.fail.Exception, id="CI=true/missing tool fails"),
        pytest.param("", pytest.skip.Exception, id="no CI/missing tool skips"),
        pytest.param("false", pytest.skip.Exception, id="CI=false/missing tool skips"),
    ],
)
def test_missing_tool(monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[Exception]) -> None:
    monkeypatch.setenv("CI", ci)

    with pytest.raises(outcome, match=f"{ABSENT} not installed"):
        require_tools("sh", ABSENT, package="example-package")


def test_present_tools_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")

    require_tools("sh", package="dash")  # returns: nothing to skip or fail
