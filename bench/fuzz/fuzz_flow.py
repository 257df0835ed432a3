"""Coverage-guided fuzzing of the front end: parser, checks, IR, reports and `fmt`.

Run with `make fuzz` (or `.venv/bin/python bench/fuzz/fuzz_flow.py [libFuzzer flags]`).
atheris (libFuzzer for Python) mutates `.flow` texts, starting from every example,
test and documentation flow, towards inputs that reach new code. For each input:

- no exception escapes `compile_source`, the text and JSON reports, or `format_source`;
- every diagnostic's span lies inside its file (offsets, lines and columns agree);
- when the input parses, `fmt` keeps the AST and the comments and is idempotent;
- time and memory stay bounded: libFuzzer's `-timeout` and `-rss_limit_mb` make a slow
  or bloated input a finding (the defaults below are generous for inputs of at most
  `-max_len` bytes; bench/hostile_bench.py measures linearity on large files).

A failing input is written as `crash-*`/`timeout-*`/`oom-*` in the working directory;
keep it under tests/dsl/fuzz_regressions/ and tests/dsl/test_fuzz_regressions.py runs it.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))  # the checks live beside the tests, which run them too

with atheris.instrument_imports(include=["tideflow", "lark"]):
    from tests.dsl.front_end_checks import check_front_end


# includes resolve inside an empty folder: the fuzzer reads no file of the machine
WORKDIR = Path(tempfile.mkdtemp(prefix="tideflow-fuzz-"))
PATH = str(WORKDIR / "fuzz.flow")


def one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return  # decoding is E101, tested on its own; the fuzzer explores text
    check_front_end(text, PATH)


def seeds() -> list[Path]:
    """Every `.flow` file of the repository, and the flows in the language reference."""
    found = [p for p in REPO.rglob("*.flow") if ".venv" not in p.parts]
    docs = (REPO / "docs" / "language.md").read_text(encoding="utf-8").split("```flow\n")
    folder = Path(tempfile.mkdtemp(prefix="tideflow-fuzz-seeds-"))
    for number, part in enumerate(docs[1:]):
        seed = folder / f"doc{number}.flow"
        seed.write_text(part.split("```", 1)[0], encoding="utf-8")
        found.append(seed)
    return found


def main() -> None:
    corpus = REPO / "bench" / "fuzz" / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    argv = [sys.argv[0], *sys.argv[1:]]
    if not any(arg.startswith("-max_len") for arg in argv):
        argv.append("-max_len=4096")
    if not any(arg.startswith("-timeout") for arg in argv):
        argv.append("-timeout=10")
    if not any(arg.startswith("-rss_limit_mb") for arg in argv):
        argv.append("-rss_limit_mb=2048")
    if not any(not arg.startswith("-") for arg in argv[1:]):
        seed_dir = Path(tempfile.mkdtemp(prefix="tideflow-fuzz-seed-corpus-"))
        for number, seed in enumerate(seeds()):
            (seed_dir / f"seed{number}").write_bytes(seed.read_bytes()[:4096])
        argv += [str(corpus), str(seed_dir)]
    os.environ.setdefault("NO_COLOR", "1")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
