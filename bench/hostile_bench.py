"""Lint time and peak memory for generated hostile files of 1, 2, 5 and 10 MB.

Each shape is written to a temporary file of about the given size and linted by
`tideflow lint --format json` in its own process (output to /dev/null), whose CPU time
and peak RSS come from the kernel (os.wait4). The growth factor per doubling of the
size, (b/a) ** (1 / log2(size_b/size_a)), should stay near 2 (linear); the target is at
most about 2.2. A process's fixed cost (Python, imports: the 'empty' row) is subtracted
from each figure before the growth is taken.

    .venv/bin/python bench/hostile_bench.py [--sizes 1,2,5,10] [--shapes a,b]
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

MB = 1_000_000
TIDEFLOW = str(Path(sys.executable).with_name("tideflow"))


def _fill(size: int, pieces: Iterator[str], head: str = "", tail: str = "") -> str:
    parts, total = [head], len(head) + len(tail)
    for piece in pieces:
        if total >= size:
            break
        parts.append(piece)
        total += len(piece)
    parts.append(tail)
    return "".join(parts)


def _count() -> Iterator[int]:
    number = 0
    while True:
        yield number
        number += 1


def long_line(size: int) -> str:
    """One job whose `after` names undefined jobs, all on one line (many errors)."""
    return _fill(
        size,
        (f"job.nope{i}, " for i in _count()),
        'job "a" {\n  command = ["true"]\n  after = [',
        "]\n}\n",
    )


def unknown_attributes(size: int) -> str:
    """One job with unknown attributes on one line (many E202)."""
    return _fill(size, (f"zz{i} = 1 " for i in _count()), 'job "a" { command = ["true"] ', "}\n")


def many_blocks(size: int) -> str:
    """A valid flow: a chain of jobs, one block each (many lines)."""

    def jobs() -> Iterator[str]:
        yield 'job "j0" {\n  command = ["true"]\n}\n'
        for i in _count():
            yield f'job "j{i + 1}" {{\n  command = ["echo", "{i}"]\n  after = [job.j{i}]\n}}\n'

    return _fill(size, jobs())


def many_errors(size: int) -> str:
    """Many blocks, each with an undefined reference and an unknown attribute."""
    return _fill(
        size,
        (
            f'job "j{i}" {{\n  command = ["true"]\n  after = [job.missing{i}]\n  retrys = 3\n}}\n'
            for i in _count()
        ),
    )


def deep_nesting(size: int) -> str:
    """Many attributes, each a list nested 90 deep (just under the limit of 100)."""
    value = "[" * 90 + "1" + "]" * 90
    return _fill(
        size,
        (
            f'pool "p{i}" {{\n  description = "x"\n  slots = 1\n}}\n'
            f'job "j{i}" {{\n  command = ["true"]\n  params = {{ m = {value} }}\n}}\n'
            for i in _count()
        ),
    )


def garbage(size: int) -> str:
    """Text that is not the language at all: the parser's error path on every line."""
    return _fill(size, (f"}} = = {{ [ {i} ( #\n" for i in _count()))


SHAPES: dict[str, Callable[[int], str]] = {
    "long-line": long_line,
    "unknown-attrs": unknown_attributes,
    "many-blocks": many_blocks,
    "many-errors": many_errors,
    "deep-nesting": deep_nesting,
    "garbage": garbage,
}


@dataclass(frozen=True)
class Cost:
    seconds: float  # user + system CPU
    peak_mb: float
    exit_code: int


def lint(path: Path) -> Cost:
    process = subprocess.Popen(
        [TIDEFLOW, "lint", "--format", "json", str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    return Cost(
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        process.returncode,
    )


def growth(small: float, large: float, size_small: float, size_large: float) -> float:
    """Growth per doubling; 0.0 when a figure is not above the fixed cost (nothing to say)."""
    if small <= 0 or large <= 0:
        return 0.0
    return float((large / small) ** (1 / math.log2(size_large / size_small)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,2,5,10", help="sizes in MB")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.flow"
        empty.write_text("")
        base = lint(empty)
        print(
            f"fixed cost of a lint process (empty file): {base.seconds:.2f} s CPU, "
            f"{base.peak_mb:.0f} MB peak RSS\n"
        )
        print(
            f"{'shape':<14} {'MB':>5} {'CPU s':>7} {'peak MB':>8} {'exit':>4}"
            f" {'time ×/doubling':>16} {'RSS ×/doubling':>15}"
        )
        worst_time = worst_rss = 0.0
        for shape in shapes:
            rows: list[tuple[float, Cost]] = []
            for size in sizes:
                path = Path(folder) / f"{shape}-{size}.flow"
                path.write_text(SHAPES[shape](int(size * MB)), encoding="utf-8")
                cost = lint(path)
                rows.append((size, cost))
                path.unlink()
                time_growth = rss_growth = ""
                if len(rows) > 1:
                    (s0, c0), (s1, c1) = rows[0], rows[-1]
                    t = growth(c0.seconds - base.seconds, c1.seconds - base.seconds, s0, s1)
                    r = growth(c0.peak_mb - base.peak_mb, c1.peak_mb - base.peak_mb, s0, s1)
                    worst_time, worst_rss = max(worst_time, t), max(worst_rss, r)
                    time_growth, rss_growth = f"{t:.2f}", f"{r:.2f}"
                print(
                    f"{shape:<14} {size:>5g} {cost.seconds:>7.2f} {cost.peak_mb:>8.0f}"
                    f" {cost.exit_code:>4} {time_growth:>16} {rss_growth:>15}",
                    flush=True,
                )
        print(
            f"\nworst growth per doubling (1 MB to each size): time {worst_time:.2f}, "
            f"memory {worst_rss:.2f}; target at most about 2.2 (2.0 is linear)"
        )


if __name__ == "__main__":
    main()
