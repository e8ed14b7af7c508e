"""The public surface re-exported from `leoma` (as httpx does): every name importable and documented."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import leoma
import leoma.errors


def test_all_is_exactly_the_documented_surface() -> None:
    assert leoma.__all__[0] == "__version__"
    assert len(set(leoma.__all__)) == len(leoma.__all__)
    for group in ("EventLog", "open_store", "Consensus", "load_consensus", "replay_epoch", "LeomaError"):
        assert group in leoma.__all__


@pytest.mark.parametrize("name", [n for n in leoma.__all__ if n != "__version__"])
def test_every_public_name_imports_and_has_a_docstring(name: str) -> None:
    value = getattr(leoma, name)
    exec(f"from leoma import {name}", {})  # the `from leoma import X` form works too
    assert value is getattr(importlib.import_module(value.__module__), name)
    assert inspect.getdoc(value), f"leoma.{name} has no docstring"
    assert name in leoma.__doc__ or value.__module__ == "leoma.errors", f"leoma.{name} is not named in the package docstring"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        leoma.no_such_thing  # noqa: B018


def test_every_error_leoma_defines_is_public_and_drawn_in_the_tree() -> None:
    defined = {n for n, v in vars(leoma.errors).items()
               if inspect.isclass(v) and issubclass(v, leoma.errors.LeomaError)}
    assert defined <= set(leoma.__all__)
    for name in defined:
        assert name in leoma.errors.__doc__, f"{name} is missing from the tree in leoma.errors"


def test_importing_leoma_stays_cheap() -> None:
    code = "import sys, leoma; print(sorted(m for m in ('leoma.log.eventlog', 'leoma.adapters.storage', 'bittensor', 'aioboto3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_public_functions_raise_from_the_tree() -> None:
    from fractions import Fraction

    from leoma.api.app import HttpError
    from leoma.api.auth import AuthError
    from leoma.ops.logging_setup import setup_logging
    from projections.ranking import explain

    with pytest.raises(leoma.errors.NotRanked, match="^5Nobody is not among the ranked miners$") as caught:
        explain([], Fraction(1, 20), "5Nobody")
    assert isinstance(caught.value, KeyError)  # older `except KeyError` callers still catch it
    with pytest.raises(leoma.errors.ConfigError, match="log format"):
        setup_logging(fmt="yaml")
    for cls in (AuthError, HttpError):
        exc = cls(403, "no")
        assert isinstance(exc, leoma.errors.RequestRefused) and (exc.status, exc.detail, str(exc)) == (403, "no", "no")
