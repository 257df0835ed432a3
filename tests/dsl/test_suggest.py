"""`dsl/suggest.py`: the one "did you mean ...?" of compiler, CLI, dashboard and plugins."""

from __future__ import annotations

from tideflow.dsl.suggest import closest, suggest


def test_the_closest_name_is_suggested() -> None:
    assert closest("extrct", ["extract", "load", "report"]) == "extract"
    assert suggest("extrct", ["extract", "load"]) == "did you mean `extract`?"
    assert suggest("extrct", {"extract": 1}.keys(), '"{}"') == 'did you mean "extract"?'
    assert suggest("secrt", ["secret"], "`{}()`") == "did you mean `secret()`?"


def test_nothing_close_means_no_suggestion() -> None:
    assert closest("zzz", ["extract", "load"]) is None
    assert suggest("zzz", ["extract", "load"]) is None
    assert suggest("extract", []) is None


def test_a_name_that_differs_only_in_case_is_found_when_asked() -> None:
    # difflib rates the two far apart; the compiler asks for the case-folded match
    assert closest("EXTRACT", ["extract"]) is None
    assert closest("EXTRACT", ["extract"], fold_case=True) == "extract"
    assert suggest("EXTRACT", ["extract"], fold_case=True) == "did you mean `extract`?"
