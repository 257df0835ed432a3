"""Language server benchmark: from an edit to its diagnostics, on a 1,000-job flow.

Starts the real server (`python -m tideflow lsp`) over stdio, opens a generated
1,000-job flow (bench/compile_bench.py's generator, seeded), then makes N edits one
after another, each waiting for the diagnostics of its own version: every other
edit types a letter into a reference (one E207 appears), the next deletes it.
The time of an edit is from sending `didChange` to receiving that version's
`publishDiagnostics`. It prints p50 and p95 beside the target (shared/DESIGN.md:
100 ms at p95) and beside a baseline measured in the same run: the compiler's
own time on the same texts in this process (what `tideflow lint` spends once
the program has started). It never asserts: a loaded machine prints slow figures.

    .venv/bin/python bench/lsp_bench.py
    .venv/bin/python bench/lsp_bench.py --jobs 1000 --edits 50
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from compile_bench import generate_flow
from lsprotocol import types as lsp
from pygls.lsp.client import LanguageClient
from tideflow.compiler.pipeline import compile_source
from tideflow.plugins.manager import installed_plugins

TARGET_P95_MS = 100.0
WAIT_SECONDS = 120.0  # a hang bound per edit, not an expected time


def percentile(values: list[float], share: float) -> float:
    """The nearest-rank percentile (`share` in 0..1) of `values`."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))
    return ordered[rank]


def edits_of(text: str, count: int) -> list[tuple[lsp.Range, str, str]]:
    """`count` edits as (range, new text, whole text after it), as one types: insert
    a letter into the first `after` reference of a job in the middle of the file
    (it becomes undefined), then delete it (it is defined again)."""
    target = text.index("after", len(text) // 2)
    start = text.index("job.", target) + len("job.")
    line = text.count("\n", 0, start)
    column = start - (text.rfind("\n", 0, start) + 1)
    here = lsp.Position(line=line, character=column)
    after = lsp.Position(line=line, character=column + 1)
    typed = text[:start] + "q" + text[start:]
    return [
        (lsp.Range(start=here, end=here), "q", typed)
        if i % 2 == 0
        else (lsp.Range(start=here, end=after), "", text)
        for i in range(count)
    ]


def baseline_ms(path: str, texts: list[str]) -> list[float]:
    """The compiler's time on each text, in this process (plugins loaded once)."""
    plugins = installed_plugins()
    times = []
    for text in texts:
        began = time.perf_counter()
        compile_source(text, path, catalog=plugins.catalog, rules=plugins.lint_rules)
        times.append((time.perf_counter() - began) * 1000)
    return times


async def measure(jobs: int, count: int) -> tuple[list[float], list[float], int]:
    text = generate_flow(jobs)
    folder = Path(tempfile.mkdtemp(prefix="lsp-bench-"))
    path = folder / "bench.flow"
    path.write_text(text, encoding="utf-8")
    uri = path.as_uri()
    client = LanguageClient("lsp-bench", "1")
    arrived: dict[int, float] = {}
    waiters: dict[int, asyncio.Future[None]] = {}

    @client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
    def diagnostics(params: lsp.PublishDiagnosticsParams) -> None:
        if params.uri != uri or params.version is None:
            return
        arrived.setdefault(params.version, time.perf_counter())
        waiter = waiters.get(params.version)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_version(version: int) -> None:
        if version in arrived:
            return
        waiters[version] = asyncio.get_running_loop().create_future()
        await asyncio.wait_for(waiters[version], WAIT_SECONDS)

    await client.start_io(sys.executable, "-m", "tideflow", "lsp")
    await client.initialize_async(
        lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(), root_uri=folder.as_uri(), process_id=None
        )
    )
    client.initialized(lsp.InitializedParams())
    client.text_document_did_open(
        lsp.DidOpenTextDocumentParams(
            text_document=lsp.TextDocumentItem(
                uri=uri, language_id="tideflow", version=1, text=text
            )
        )
    )
    await wait_version(1)
    latencies = []
    texts = []
    for number, (where, new_text, whole) in enumerate(edits_of(text, count), start=2):
        sent = time.perf_counter()
        client.text_document_did_change(
            lsp.DidChangeTextDocumentParams(
                text_document=lsp.VersionedTextDocumentIdentifier(uri=uri, version=number),
                content_changes=[lsp.TextDocumentContentChangePartial(range=where, text=new_text)],
            )
        )
        await wait_version(number)
        latencies.append((arrived[number] - sent) * 1000)
        texts.append(whole)
    await client.shutdown_async(None)
    client.exit(None)
    await client.stop()
    return latencies, baseline_ms(str(path), texts), text.count("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--edits", type=int, default=50)
    args = parser.parse_args()
    latencies, baseline, lines = asyncio.run(measure(args.jobs, args.edits))
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    b50, b95 = percentile(baseline, 0.5), percentile(baseline, 0.95)
    print(f"{args.jobs} jobs ({lines} lines), {args.edits} edits, didChange -> diagnostics")
    print(f"{'':28}{'p50 ms':>10}{'p95 ms':>10}{'mean ms':>10}")
    print(f"{'language server':28}{p50:10.1f}{p95:10.1f}{statistics.fmean(latencies):10.1f}")
    print(
        f"{'baseline: compile in-proc':28}{b50:10.1f}{b95:10.1f}{statistics.fmean(baseline):10.1f}"
    )
    verdict = "met" if p95 <= TARGET_P95_MS else "NOT met"
    print(f"target: p95 <= {TARGET_P95_MS:.0f} ms: {verdict} (server p95 / baseline p95: "
          f"{p95 / b95:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
