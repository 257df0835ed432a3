"""The quick fix's replacement is the compiler's "did you mean", written as the
user writes it (quoted where the span is a string, without `()` on a name)."""

from __future__ import annotations

import pytest
from tideflow.compiler import compile_source

from tideflow.lsp.diagnostics import replacement_of


@pytest.mark.parametrize(
    ("text", "code", "replacement"),
    [
        ('job "a" {\n  run = "m:f"\n  retrys = 3\n}\n', "E202", "retry"),
        ('job "a" {\n  run = "m:f"\n}\njob "b" {\n  run = "m:f"\n  after = [job.b_]\n}\n',
         "E207", "job.b"),
        ('broker "main" {\n  kind = "embeded"\n}\n', "E211", '"embedded"'),
        ('job "a" {\n  run = "m:f"\n  schedule = crn("0 3 * * *")\n}\n', "E216", "cron"),
        ('job "a" {\n  run = "m:f"\n  schedule = cron("0 3 * * *", timezone = "Europe/Lisbn")\n}\n',
         "E210", '"Europe/Lisbon"'),
    ],
)  # fmt: skip
def test_replacement(text: str, code: str, replacement: str) -> None:
    found = [d for d in compile_source(text, "a.flow").diagnostics if d.code == code]
    assert found, [d.code for d in compile_source(text, "a.flow").diagnostics]
    assert replacement_of(found[0], text) == replacement


def test_no_suggestion_no_fix() -> None:
    text = 'job "a" {\n  run = "m:f"\n  zzzzzz = 3\n}\n'
    (problem,) = compile_source(text, "a.flow").diagnostics
    assert problem.code == "E202"
    assert replacement_of(problem, text) is None
