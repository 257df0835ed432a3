"""The open documents, the include graph both ways, and the compiler run over them.

A document's flow is compiled from its *roots*: the files that include it
(transitively) and are included by no known file, or the document itself when
nothing known includes it. A file included by another is thus checked as part of
the flow it belongs to (its references to the includer's blocks resolve), exactly
as `tideflow lint ROOT` checks it. The text of an open document overrides the disk,
for the root and for included files alike.

Compiled roots are cached until the next change of any document (`generation`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import final

from tideflow.compiler.pipeline import CompileResult, LintRule, compile_loaded
from tideflow.dsl import ast
from tideflow.dsl.diagnostics import Diagnostic, Severity
from tideflow.dsl.loader import load_source
from tideflow.dsl.parser import parse
from tideflow.plugins.api.options import Catalog

from .analysis import recover
from .index import Analysis, SymbolIndex, index_files
from .positions import LineIndex
from .reparse import Reparser

__all__ = ["MAX_LIVE_SIZE", "Document", "RootResult", "Workspace", "too_large"]

MAX_LIVE_SIZE = 2_000_000
"""Characters above which a file is not analysed as one types (`tideflow lint` still
checks it): a 10 MB file takes seconds to compile, which an editor cannot wait for."""

MAX_RECOVERED_SIZE = 200_000
"""Characters up to which a file that never parsed is parsed around its errors (a
few full parses); a larger one shows the last tree that parsed."""

MAX_SCANNED_FILES = 500
"""`.flow` files of the workspace folders read to learn who includes whom."""


def too_large(path: str, size: int) -> Diagnostic:
    """The one diagnostic of a file above `MAX_LIVE_SIZE` (its first character)."""
    span = ast.Span(path, 1, 1, 1, 1, 0, 0)
    # no code: it is not a problem of the file, which `tideflow lint` may accept
    return Diagnostic(
        "",
        f"file too large for live analysis ({size / 1e6:.1f} MB; the limit is "
        f"{MAX_LIVE_SIZE / 1e6:.0f} MB)",
        span,
        help="run `tideflow lint` on it",
        level=Severity.WARNING,
    )


@dataclass(frozen=True, slots=True)
class Document:
    """An open document: its text as the editor has it."""

    uri: str
    path: str
    text: str
    version: int | None


@dataclass(frozen=True, slots=True)
class RootResult:
    """One root compiled with the open documents' texts."""

    root: str
    result: CompileResult

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file this root reached (read or not), root first."""
        return tuple(self.result.sources)


MAX_SCANNED_FOLDERS = 2_000
"""Folders walked looking for `.flow` files (a workspace may be a home folder)."""

_SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "venv"})


def _flow_files(folders: Iterable[str]) -> Iterator[Path]:
    """The `.flow` files under `folders`, hidden and tool folders left out, in a
    bounded walk."""
    walked = 0
    for folder in folders:
        for here, subfolders, files in os.walk(folder):
            walked += 1
            if walked > MAX_SCANNED_FOLDERS:
                return
            subfolders[:] = sorted(
                d for d in subfolders if not d.startswith(".") and d not in _SKIPPED_FOLDERS
            )
            for name in sorted(files):
                if name.endswith(".flow"):
                    yield Path(here) / name


def normal_path(path: str) -> str:
    """One spelling of a file's path: absolute, normalised (as the loader joins them)."""
    return os.path.normpath(Path(path).absolute())


def include_targets(flow: ast.FlowFile) -> frozenset[str]:
    """The paths a file's `include`s name, resolved as the loader resolves them."""
    folder = Path(flow.path).parent
    return frozenset(
        os.path.normpath(folder / item.path.value)
        for item in flow.includes
        if "\0" not in item.path.value
    )


@final
class Workspace:
    """Documents, include graph and compiled roots; see the module docstring."""

    def __init__(
        self,
        *,
        catalog: Callable[[], Catalog],
        rules: Callable[[], Sequence[LintRule]],
        include_root: str | None = None,
        encoding: Callable[[], str] = lambda: "utf-16",
    ) -> None:
        self._catalog = catalog
        self._rules = rules
        self.include_root = include_root
        self._encoding = encoding
        self.documents: dict[str, Document] = {}  # by path
        self._includes: dict[str, frozenset[str]] = {}  # path -> files it includes
        self._roots: dict[str, RootResult] = {}  # compiled this generation
        self._analyses: dict[str, Analysis] = {}  # by uri, this generation
        self._last_good: dict[str, ast.FlowFile] = {}  # by path
        self._reparser = Reparser()  # parses only the blocks an edit touched
        self.generation = 0
        self._folders: list[str] = []
        self._disk: dict[str, tuple[tuple[int, int], frozenset[str]]] = {}  # scanned files
        self._scanned = False

    # --- documents ---------------------------------------------------------------

    def add_folders(self, folders: Iterable[str]) -> None:
        """Workspace folders whose `.flow` files may include the open ones."""
        for folder in folders:
            if normal_path(folder) not in self._folders:
                self._folders.append(normal_path(folder))
        self._scanned = False

    def update(self, uri: str, path: str, text: str, version: int | None) -> None:
        """A document was opened or changed."""
        path = normal_path(path)
        if path not in self.documents:
            self._scanned = False  # a file opened: who includes it may be news
        self.documents[path] = Document(uri, path, text, version)
        self._changed()

    def close(self, path: str) -> None:
        """A document was closed: the disk is its text again."""
        self.documents.pop(normal_path(path), None)
        self._reparser.forget(normal_path(path))
        self._changed()

    def document_by_uri(self, uri: str) -> Document | None:
        return next((d for d in self.documents.values() if d.uri == uri), None)

    def invalidate(self) -> None:
        """Files on disk changed: compile everything anew (the include graph too)."""
        self._includes.clear()
        self._scanned = False
        self._changed()

    def _changed(self) -> None:
        self.generation += 1
        self._roots.clear()
        self._analyses.clear()

    def text_of(self, path: str) -> str | None:
        """The open document's text, else the file's on disk, else None."""
        document = self.documents.get(normal_path(path))
        if document is not None:
            return document.text
        try:
            return Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None

    # --- the include graph ---------------------------------------------------------

    def includes_of(self, path: str) -> frozenset[str]:
        """The files `path` includes directly (as last parsed)."""
        return self._includes.get(normal_path(path), frozenset())

    def includers_of(self, path: str) -> frozenset[str]:
        """The known files that include `path` directly."""
        self._scan()
        path = normal_path(path)
        return frozenset(p for p, targets in self._includes.items() if path in targets)

    def roots_of(self, path: str) -> tuple[str, ...]:
        """The files whose flows hold `path`: its outermost includers, or itself."""
        path = normal_path(path)
        roots: list[str] = []
        seen = {path}
        stack = [path]
        while stack:
            current = stack.pop()
            parents = self.includers_of(current) - {current}
            if not parents and current not in roots:
                roots.append(current)
            for parent in sorted(parents - seen):
                seen.add(parent)
                stack.append(parent)
        # a cycle has no outermost includer: check the file from itself
        return tuple(roots) or (path,)

    def _learn(self, flows: Iterable[ast.FlowFile]) -> None:
        for flow in flows:
            self._includes[normal_path(flow.path)] = include_targets(flow)

    def _scan(self) -> None:
        """Learn the includes of the workspace folders' `.flow` files: again after a
        document is opened or files change on disk, reading only files that changed."""
        if self._scanned:
            return
        self._scanned = True
        count = 0
        for file in _flow_files(self._folders):
            path = normal_path(str(file))
            if path in self.documents:
                continue
            count += 1
            if count > MAX_SCANNED_FILES:
                return
            self._scan_file(file, path)
        for document in self.documents.values():
            self._learn_document(document)

    def _scan_file(self, file: Path, path: str) -> None:
        try:
            stat = file.stat()
        except OSError:
            return
        stamp = (stat.st_mtime_ns, stat.st_size)
        known = self._disk.get(path)
        if known is not None and known[0] == stamp:
            self._includes[path] = known[1]
            return
        if stat.st_size > MAX_LIVE_SIZE:
            return
        try:
            text = file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        parsed = parse(text, path)
        if parsed.file is not None:
            targets = include_targets(parsed.file)
            self._disk[path] = (stamp, targets)
            self._includes[path] = targets

    def _learn_document(self, document: Document) -> None:
        if len(document.text) > MAX_LIVE_SIZE:
            return
        parsed = self._reparser.parse(document.text, document.path)
        if parsed.file is not None:
            self._learn((parsed.file,))

    # --- compiling -------------------------------------------------------------------

    def compile_root(self, root: str) -> RootResult:
        """Compile the flow whose root file is `root`, open documents' texts first."""
        root = normal_path(root)
        cached = self._roots.get(root)
        if cached is not None:
            return cached
        text = self.text_of(root)
        if text is None:
            text = ""
        loaded = load_source(
            text,
            root,
            include_root=self.include_root,
            overlay=self._overlay(),
            parse_text=self._reparser.parse,
        )
        result = compile_loaded(loaded, catalog=self._catalog(), rules=self._rules())
        self._learn(result.files)
        for flow in result.files:
            self._last_good[normal_path(flow.path)] = flow
        compiled = RootResult(root, result)
        self._roots[root] = compiled
        return compiled

    def _overlay(self) -> Mapping[str, str]:
        return {path: document.text for path, document in self.documents.items()}

    def compile_for(self, path: str) -> tuple[RootResult, ...]:
        """Compile every root whose flow holds `path` (once per generation)."""
        path = normal_path(path)
        if path not in self._includes:
            document = self.documents.get(path)
            if document is not None:
                self._learn_document(document)
        roots = [r for r in self.roots_of(path) if len(self.text_of(r) or "") <= MAX_LIVE_SIZE]
        return tuple(self.compile_root(root) for root in roots or [path])

    def diagnostics_by_file(self, path: str) -> dict[str, tuple[str, tuple[Diagnostic, ...]]]:
        """For every file of the flows holding `path`: its text and its diagnostics."""
        document = self.documents.get(normal_path(path))
        if document is not None and len(document.text) > MAX_LIVE_SIZE:
            return {document.path: (document.text, (too_large(document.path, len(document.text)),))}
        found: dict[str, tuple[str, list[Diagnostic]]] = {}
        for compiled in self.compile_for(path):
            sources = compiled.result.sources
            for file in compiled.paths:
                found.setdefault(normal_path(file), (sources[file], []))
            for diagnostic in compiled.result.diagnostics:
                where = compiled.root if diagnostic.span is None else diagnostic.span.path
                key = normal_path(where)
                if key not in found:
                    found[key] = (sources.get(where, ""), [])
                if diagnostic not in found[key][1]:
                    found[key][1].append(diagnostic)
        return {key: (text, tuple(items)) for key, (text, items) in found.items()}

    def _recover(self, text: str, path: str) -> ast.FlowFile | None:
        """The blocks of `text` that parse: from the last clean tree when there is
        one, else by parsing around the error (a few full parses: small files only),
        else the last tree that parsed, however old."""
        found = self._reparser.recover(text, path)
        if found is None and len(text) <= MAX_RECOVERED_SIZE:
            found = recover(text, path)
        return found or self._last_good.get(path)

    # --- analyses --------------------------------------------------------------------

    def analysis(self, uri: str) -> Analysis | None:
        """The analysis of the open document `uri` at its current text."""
        cached = self._analyses.get(uri)
        if cached is not None:
            return cached
        document = self.document_by_uri(uri)
        if document is None:
            return None
        lines = LineIndex(document.text, self._encoding())
        if len(document.text) > MAX_LIVE_SIZE:
            problem = too_large(document.path, len(document.text))
            analysis = Analysis(
                uri, document.path, document.text, document.version, None, (problem,),
                SymbolIndex(), lines, {document.path: document.text}, stale=True,
            )  # fmt: skip
            self._analyses[uri] = analysis
            return analysis
        compiled = self.compile_for(document.path)
        files: dict[str, ast.FlowFile] = {}
        sources: dict[str, str] = {}
        diagnostics: list[Diagnostic] = []
        for root in compiled:
            sources.update(root.result.sources)
            for parsed in root.result.files:
                files.setdefault(normal_path(parsed.path), parsed)
            for diagnostic in root.result.diagnostics:
                where = root.root if diagnostic.span is None else diagnostic.span.path
                if normal_path(where) == document.path and diagnostic not in diagnostics:
                    diagnostics.append(diagnostic)
        flow: ast.FlowFile | None = files.get(document.path)
        stale = False
        if flow is None:
            stale = True
            flow = self._recover(document.text, document.path)
            if flow is not None:
                files[document.path] = flow
        analysis = Analysis(
            uri,
            document.path,
            document.text,
            document.version,
            flow,
            tuple(diagnostics),
            index_files(files.values()),
            lines,
            sources,
            stale=stale,
        )
        self._analyses[uri] = analysis
        return analysis
