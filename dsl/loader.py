"""Reading a flow from disk: the root file and every file it includes.

`include "common.flow"` is resolved relative to the including file and followed
recursively. A file reached twice (a diamond, or two spellings of one path) is
read once; a file that includes itself, directly or through others, is an
include cycle (E111). Problems are collected as diagnostics, never raised.

Includes stay inside the *include root*: by default the folder of the root file,
or the folder the caller names. A file outside it (an absolute path, a `..` that
leaves it, or a symbolic link that points out of it) is E112 and is never opened,
so that compiling text one was given cannot read, and echo, any file on the machine.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from . import ast
from .diagnostics import Diagnostic
from .parser import ParseResult, decode_source, parse
from .suggest import closest

__all__ = ["LoadedFlow", "load_flow", "load_source"]


@dataclass(frozen=True, slots=True)
class LoadedFlow:
    """The files of one flow, parsed.

    `files` holds every file that parsed, root first, then in the order their
    includes were reached. `blocks` is the flow's blocks in include-expansion
    order: an `include` stands for the blocks of the file it names, in place.
    `complete` is false when a file could not be read or parsed, so that later
    stages do not report the consequences of a missing file as errors of their own.
    """

    root: str
    files: tuple[ast.FlowFile, ...]
    blocks: tuple[ast.Block, ...]
    diagnostics: tuple[Diagnostic, ...]
    sources: Mapping[str, str]
    complete: bool


def load_flow(
    path: str | os.PathLike[str], *, include_root: str | os.PathLike[str] | None = None
) -> LoadedFlow:
    """Read and parse the flow whose root file is `path`, following includes.

    Included files must lie inside `include_root` (default: the folder of `path`).
    """
    root = os.fspath(path)
    loader = _Loader(_root_folder(root, include_root), _root_shown(root, include_root))
    try:
        data = Path(root).read_bytes()
    except OSError as exc:
        problem = Diagnostic("E100", f"cannot read `{root}`: {_reason(exc)}", None)
        return LoadedFlow(root, (), (), (problem,), {}, complete=False)
    loader.read(root, data)
    return loader.result(root)


def load_source(
    text: str,
    path: str = "<string>",
    *,
    include_root: str | os.PathLike[str] | None = None,
    overlay: Mapping[str, str] | None = None,
    parse_text: Callable[[str, str], ParseResult] = parse,
) -> LoadedFlow:
    """Parse `text` as the root file `path`; its includes are read from `path`'s folder
    and must lie inside `include_root` (default: that folder). `overlay` maps absolute,
    normalised paths to texts read instead of those files (an editor's unsaved ones);
    `parse_text` stands in for `parser.parse` (the language server's, which reuses
    the last tree of a file it parsed)."""
    loader = _Loader(_root_folder(path, include_root), _root_shown(path, include_root))
    loader.overlay = overlay or {}
    loader.parse_text = parse_text
    loader.enter(path, text)
    return loader.result(path)


def _reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return (exc.strerror or type(exc).__name__).lower()


def _root_folder(root_file: str, include_root: str | os.PathLike[str] | None) -> str:
    """The include root as a real path (symbolic links resolved, as targets are)."""
    if include_root is None:
        return os.path.realpath(Path(root_file).parent)
    return os.path.realpath(include_root)


def _root_shown(root_file: str, include_root: str | os.PathLike[str] | None) -> str:
    """The include root as the user would recognise it: as given, or the file's folder."""
    if include_root is None:
        return str(Path(root_file).parent)
    return os.fspath(include_root)


class _Loader:
    def __init__(self, include_root: str, include_root_shown: str) -> None:
        self.include_root = include_root
        self.include_root_shown = include_root_shown
        self.files: list[ast.FlowFile] = []
        self.blocks: list[ast.Block] = []
        self.diagnostics: list[Diagnostic] = []
        self.sources: dict[str, str] = {}
        self.complete = True
        self._seen: set[str] = set()  # real paths of files already read
        self._chain: list[tuple[str, str]] = []  # (real path, shown path) of open includes
        self.overlay: Mapping[str, str] = {}  # absolute path -> text used instead of the disk
        self.parse_text: Callable[[str, str], ParseResult] = parse

    def result(self, root: str) -> LoadedFlow:
        return LoadedFlow(
            root,
            tuple(self.files),
            tuple(self.blocks),
            tuple(self.diagnostics),
            dict(self.sources),
            self.complete,
        )

    def read(self, shown: str, data: bytes) -> None:
        """Decode one file's bytes as UTF-8 and enter it."""
        text, problem = decode_source(data, shown)
        if problem is not None:
            self._seen.add(_identity(shown))
            self.diagnostics.append(problem)
            self.complete = False
            # the error is shown against the text, so keep what can be decoded
            self.sources[shown] = data.decode("utf-8", errors="replace")
            return
        self.enter(shown, text)

    def enter(self, shown: str, text: str) -> None:
        """Parse one file and follow its includes, depth first."""
        real = _identity(shown)
        self._seen.add(real)
        parsed = self.parse_text(text, shown)
        self.diagnostics.extend(parsed.diagnostics)
        if parsed.file is None:
            self.complete = False
            self.sources[shown] = text
            return
        self.sources[shown] = parsed.file.source
        self.files.append(parsed.file)
        self._chain.append((real, shown))
        for item in parsed.file.items:
            if isinstance(item, ast.Block):
                self.blocks.append(item)
            else:
                self._include(shown, item)
        self._chain.pop()

    def _include(self, including: str, include: ast.Include) -> None:
        target = include.path.value
        if "\0" in target:  # no file system takes it (os functions raise ValueError)
            self.complete = False
            self.diagnostics.append(
                Diagnostic(
                    "E110",
                    "cannot read included file: its path contains a NUL character",
                    include.path.span,
                )
            )
            return
        shown = os.path.normpath(Path(including).parent / target)
        real = _identity(shown)
        open_paths = [path for path, _ in self._chain]
        if real in open_paths:
            first = open_paths.index(real)
            chain = " -> ".join(name for _, name in self._chain[first:])
            self.diagnostics.append(
                Diagnostic(
                    "E111",
                    f"include cycle: {chain} -> {shown}",
                    include.span,
                    label="this include closes the cycle",
                )
            )
            self.complete = False
            return
        if real in self._seen:
            return  # already read through another include or another spelling
        if not _inside(real, self.include_root):
            # never opened: its text would reach the user in this diagnostic's snippets
            self.complete = False
            self.diagnostics.append(
                Diagnostic(
                    "E112",
                    f'included file "{target}" is outside the include root',
                    include.path.span,
                    label=f"this resolves outside `{self.include_root_shown}`",
                    help="to allow files under another folder, pass `--include-root DIR` "
                    "(or set TIDEFLOW_INCLUDE_ROOT)",
                )
            )
            return
        unsaved = self.overlay.get(os.path.normpath(Path(shown).absolute()))
        if unsaved is not None:
            self.enter(shown, unsaved)
            return
        try:
            data = Path(shown).read_bytes()
        except OSError as exc:
            self.complete = False
            if isinstance(exc, FileNotFoundError):
                message = f'included file "{target}" not found'
                label = f"no such file: {shown}"
            else:
                message = f'cannot read included file "{target}": {_reason(exc)}'
                label = None
            self.diagnostics.append(
                Diagnostic(
                    "E110",
                    message,
                    include.path.span,
                    label=label,
                    help=_similar_file(shown, target),
                )
            )
            return
        self.read(shown, data)


def _inside(path: str, folder: str) -> bool:
    """Whether the real path `path` is `folder` or lies under it."""
    try:
        return os.path.commonpath((path, folder)) == folder
    except ValueError:  # different drives, or one relative and one absolute
        return False


def _identity(path: str) -> str:
    """One key per file, however it is spelled (relative parts, symbolic links)."""
    return os.path.realpath(path)


def _similar_file(missing: str, written: str) -> str | None:
    """A `.flow` file next to the missing one whose name is close to it."""
    try:
        names = [p.name for p in Path(missing).parent.iterdir() if p.suffix == ".flow"]
    except OSError:
        return None
    close = closest(Path(missing).name, names)
    if close is None:
        return None
    return f'did you mean "{(Path(written).parent / close).as_posix()}"?'
