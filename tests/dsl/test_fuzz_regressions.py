"""Inputs the fuzzer (bench/fuzz/fuzz_flow.py) found to break a promise of the front end,
kept so that they never break it again. Each file is one input, named after what it broke."""

from __future__ import annotations

from pathlib import Path

import pytest

from .front_end_checks import check_front_end

FOUND = sorted((Path(__file__).parent / "fuzz_regressions").iterdir())


@pytest.mark.parametrize("found", FOUND, ids=[p.name for p in FOUND])
def test_the_front_end_keeps_its_promises(found: Path, tmp_path: Path) -> None:
    check_front_end(found.read_bytes().decode("utf-8"), str(tmp_path / found.name))
