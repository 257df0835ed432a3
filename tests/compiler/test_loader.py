"""Loading a flow from disk: the root file, includes, and the file-level codes E100-E112."""

from __future__ import annotations

from pathlib import Path

import pytest
from tideflow.compiler import compile_flow, compile_source
from tideflow.compiler.report import render_text
from tideflow.dsl.diagnostics import Diagnostic
from tideflow.dsl.loader import load_flow, load_source


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def only(diagnostics: tuple[Diagnostic, ...], code: str) -> Diagnostic:
    found = [d for d in diagnostics if d.code == code]
    assert len(found) == 1, diagnostics
    return found[0]


def test_missing_root_file_is_e100_without_a_location(tmp_path: Path) -> None:
    missing = tmp_path / "nothere.flow"
    result = compile_flow(missing)
    assert [d.code for d in result.diagnostics] == ["E100"]
    problem = result.diagnostics[0]
    assert problem.message == f"cannot read `{missing}`: no such file"
    assert problem.span is None
    assert result.ir is None and result.files == ()


def test_a_directory_as_root_is_e100(tmp_path: Path) -> None:
    result = compile_flow(tmp_path)
    problem = only(result.diagnostics, "E100")
    assert problem.message == f"cannot read `{tmp_path}`: it is a directory"


def test_root_file_that_is_not_utf8_is_e101_at_the_bad_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin.flow"
    path.write_bytes(b'pool "db" {\n  description = "caf\xe9"\n}\n')
    result = compile_flow(path)
    problem = only(result.diagnostics, "E101")
    assert problem.span is not None
    assert (problem.span.path, problem.span.line, problem.span.column) == (str(path), 2, 21)
    assert problem.message == "file is not valid UTF-8 (byte 0xe9 at offset 32)"
    # the renderer still gets a text to show the line from
    assert "caf" in result.sources[str(path)]
    assert result.ir is None


def test_included_blocks_join_the_flow(tmp_path: Path) -> None:
    write(tmp_path, "common/ops.flow", 'pool "db" { slots = 2 }\n')
    root = write(
        tmp_path,
        "main.flow",
        'include "common/ops.flow"\njob "a" {\n  run = "m:f"\n  pool = pool.db\n}\n',
    )
    result = compile_flow(root)
    assert result.ok, result.diagnostics
    assert result.ir is not None
    assert result.ir.pools["db"].slots == 2
    assert result.ir.jobs["a"].pool == "db"
    assert [f.path for f in result.files] == [str(root), str(tmp_path / "common" / "ops.flow")]
    assert set(result.sources) == {str(root), str(tmp_path / "common" / "ops.flow")}
    # a node from an included file points into that file
    span = result.ir.span_of("pool", "db")
    assert span is not None and span.path == str(tmp_path / "common" / "ops.flow")


def test_include_is_relative_to_the_including_file(tmp_path: Path) -> None:
    write(tmp_path, "lib/a.flow", 'include "b.flow"\n')
    write(tmp_path, "lib/b.flow", 'pool "db" { slots = 1 }\n')
    write(tmp_path, "b.flow", 'pool "wrong" { slots = 1 }\n')
    root = write(tmp_path, "main.flow", 'include "lib/a.flow"\njob "a" { run = "m:f" }\n')
    loaded = load_flow(root)
    assert [b.label.value for b in loaded.blocks if b.label] == ["db", "a"]


def test_blocks_merge_in_include_expansion_order(tmp_path: Path) -> None:
    write(tmp_path, "mid.flow", 'pool "p2" { slots = 1 }\n')
    root = write(
        tmp_path,
        "main.flow",
        'pool "p1" { slots = 1 }\ninclude "mid.flow"\npool "p3" { slots = 1 }\n',
    )
    loaded = load_flow(root)
    assert [b.label.value for b in loaded.blocks if b.label] == ["p1", "p2", "p3"]


def test_missing_include_is_e110_at_the_include_path(tmp_path: Path) -> None:
    write(tmp_path, "common.flow", "")
    root = write(tmp_path, "main.flow", '# shared\ninclude "comon.flow"\n')
    result = compile_flow(root)
    problem = only(result.diagnostics, "E110")
    assert problem.span is not None
    assert (problem.span.path, problem.span.line, problem.span.column) == (str(root), 2, 9)
    assert problem.message == 'included file "comon.flow" not found'
    assert problem.help == 'did you mean "common.flow"?'
    assert result.ir is None


def test_missing_include_in_a_subfolder_suggests_the_written_path(tmp_path: Path) -> None:
    write(tmp_path, "lib/common.flow", "")
    root = write(tmp_path, "main.flow", 'include "lib/comon.flow"\n')
    problem = only(compile_flow(root).diagnostics, "E110")
    assert problem.help == 'did you mean "lib/common.flow"?'


def test_missing_include_without_a_similar_file_has_no_help(tmp_path: Path) -> None:
    root = write(tmp_path, "main.flow", 'include "zzz.flow"\n')
    problem = only(compile_flow(root).diagnostics, "E110")
    assert problem.help is None


def test_including_a_directory_is_e110(tmp_path: Path) -> None:
    (tmp_path / "dir.flow").mkdir()
    root = write(tmp_path, "main.flow", 'include "dir.flow"\n')
    problem = only(compile_flow(root).diagnostics, "E110")
    assert problem.message == 'cannot read included file "dir.flow": it is a directory'


def test_include_cycle_is_e111_showing_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "b.flow", 'pool "db" { slots = 1 }\ninclude "a.flow"\n')
    root = write(tmp_path, "a.flow", 'include "b.flow"\n')
    result = compile_flow(root)
    problem = only(result.diagnostics, "E111")
    b_path = str(tmp_path / "b.flow")
    assert problem.span is not None
    assert (problem.span.path, problem.span.line, problem.span.column) == (b_path, 2, 1)
    assert problem.message == f"include cycle: {root} -> {b_path} -> {root}"
    assert result.ir is None


def test_a_file_that_includes_itself_is_a_cycle(tmp_path: Path) -> None:
    root = write(tmp_path, "self.flow", 'include "self.flow"\n')
    problem = only(compile_flow(root).diagnostics, "E111")
    assert problem.message == f"include cycle: {root} -> {root}"


def test_relative_root_paths_show_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "flows/b.flow", 'include "a.flow"\n')
    write(tmp_path, "flows/a.flow", 'include "b.flow"\n')
    problem = only(compile_flow("flows/a.flow").diagnostics, "E111")
    assert problem.message == "include cycle: flows/a.flow -> flows/b.flow -> flows/a.flow"


def test_a_diamond_reads_the_shared_file_once(tmp_path: Path) -> None:
    write(tmp_path, "shared.flow", 'pool "db" { slots = 1 }\n')
    write(tmp_path, "left.flow", 'include "shared.flow"\n')
    write(tmp_path, "sub/right.flow", 'include "../shared.flow"\n')
    root = write(
        tmp_path,
        "main.flow",
        'include "left.flow"\ninclude "sub/right.flow"\njob "a" {\n'
        '  run = "m:f"\n  pool = pool.db\n}\n',
    )
    result = compile_flow(root)
    # read twice, the pool would be a duplicate (E205)
    assert result.ok, result.diagnostics
    assert [Path(f.path).name for f in result.files] == [
        "main.flow",
        "left.flow",
        "shared.flow",
        "right.flow",
    ]


def test_a_file_reached_through_a_symbolic_link_is_read_once(tmp_path: Path) -> None:
    write(tmp_path, "real/shared.flow", 'pool "db" { slots = 1 }\n')
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    root = write(
        tmp_path,
        "main.flow",
        'include "real/shared.flow"\ninclude "alias/shared.flow"\n'
        'job "a" {\n  run = "m:f"\n  pool = pool.db\n}\n',
    )
    assert compile_flow(root).ok


def test_syntax_error_in_an_included_file_stops_before_the_checks(tmp_path: Path) -> None:
    write(tmp_path, "broken.flow", 'pool "db" {\n')
    root = write(tmp_path, "main.flow", 'include "broken.flow"\njob "a" { pool = pool.db }\n')
    result = compile_flow(root)
    # only the syntax error: no E207 for the pool that could not be read, no E212
    assert [d.code for d in result.diagnostics] == ["E104"]
    assert result.diagnostics[0].span is not None
    assert result.diagnostics[0].span.path == str(tmp_path / "broken.flow")


def test_compile_source_resolves_includes_next_to_its_path(tmp_path: Path) -> None:
    write(tmp_path, "pools.flow", 'pool "db" { slots = 3 }\n')
    text = 'include "pools.flow"\njob "a" {\n  run = "m:f"\n  pool = pool.db\n}\n'
    result = compile_source(text, str(tmp_path / "main.flow"))
    assert result.ir is not None and result.ir.pools["db"].slots == 3


def test_load_source_keeps_the_text_it_was_given() -> None:
    loaded = load_source('pool "db" { slots = 1 }\n', "inline.flow")
    assert loaded.complete
    assert loaded.sources == {"inline.flow": 'pool "db" { slots = 1 }\n'}
    assert loaded.root == "inline.flow"


def test_flow_name_is_the_root_file_stem_without_a_flow_block(tmp_path: Path) -> None:
    root = write(tmp_path, "nightly-export.flow", 'job "a" { run = "m:f" }\n')
    result = compile_flow(root)
    assert result.ir is not None
    assert result.ir.info.name == "nightly-export"
    assert result.ir.info.source == str(root)


def test_flow_block_may_come_from_an_included_file(tmp_path: Path) -> None:
    write(tmp_path, "meta.flow", 'flow "orders" { timezone = "Europe/Berlin" }\n')
    root = write(tmp_path, "main.flow", 'include "meta.flow"\njob "a" { run = "m:f" }\n')
    result = compile_flow(root)
    assert result.ir is not None
    assert (result.ir.info.name, result.ir.info.timezone) == ("orders", "Europe/Berlin")


def test_two_flow_blocks_across_files_are_e205(tmp_path: Path) -> None:
    write(tmp_path, "meta.flow", 'flow "other" {}\n')
    root = write(tmp_path, "main.flow", 'flow "orders" {}\ninclude "meta.flow"\n')
    problem = only(compile_flow(root).diagnostics, "E205")
    assert problem.span is not None
    assert (problem.span.path, problem.span.line, problem.span.column) == (
        str(tmp_path / "meta.flow"),
        1,
        1,
    )
    assert problem.message == "a flow has only one `flow` block"
    assert [(r.span.path, r.span.line, r.message) for r in problem.related] == [
        (str(root), 1, "first `flow` block here")
    ]


# --- the include root (E112) ----------------------------------------------------------------

SECRET_LINE = "root:$6$never-shown:19000:0:99999:7:::"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A file beside the project, not under it, whose text must never be shown."""
    return write(tmp_path, "elsewhere/passwords.flow", SECRET_LINE + "\n")


def assert_outside_root(root: Path, written: str) -> None:
    result = compile_flow(root)
    problem = only(result.diagnostics, "E112")
    assert problem.message == f'included file "{written}" is outside the include root'
    assert result.ir is None
    rendered = render_text(result.diagnostics, result.sources)
    assert "never-shown" not in rendered
    assert all("never-shown" not in text for text in result.sources.values())


def test_a_dotdot_include_that_leaves_the_root_is_e112(tmp_path: Path, outside: Path) -> None:
    root = write(tmp_path, "project/main.flow", 'include "../elsewhere/passwords.flow"\n')
    assert_outside_root(root, "../elsewhere/passwords.flow")


def test_an_absolute_include_outside_the_root_is_e112(tmp_path: Path, outside: Path) -> None:
    root = write(tmp_path, "project/main.flow", f'include "{outside}"\n')
    assert_outside_root(root, str(outside))


def test_a_symlink_that_points_outside_the_root_is_e112(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "link.flow").symlink_to(outside)
    root = write(tmp_path, "project/main.flow", 'include "link.flow"\n')
    assert_outside_root(root, "link.flow")


def test_a_nested_include_cannot_leave_the_root_either(tmp_path: Path, outside: Path) -> None:
    write(tmp_path, "project/sub/inner.flow", 'include "../../elsewhere/passwords.flow"\n')
    root = write(tmp_path, "project/main.flow", 'include "sub/inner.flow"\n')
    assert_outside_root(root, "../../elsewhere/passwords.flow")


def test_a_dotdot_that_stays_inside_the_root_is_fine(tmp_path: Path) -> None:
    write(tmp_path, "project/common.flow", 'pool "db" { slots = 1 }\n')
    write(tmp_path, "project/sub/inner.flow", 'include "../common.flow"\n')
    root = write(tmp_path, "project/main.flow", 'include "sub/inner.flow"\n')
    assert compile_flow(root).ok


def test_a_wider_include_root_admits_the_file(tmp_path: Path) -> None:
    write(tmp_path, "shared/common.flow", 'pool "db" { slots = 1 }\n')
    root = write(tmp_path, "project/main.flow", 'include "../shared/common.flow"\n')
    assert only(compile_flow(root).diagnostics, "E112")
    result = compile_flow(root, include_root=tmp_path)
    assert result.ok, result.diagnostics
    assert compile_source(root.read_text(), str(root), include_root=tmp_path).ok


def test_load_source_confines_includes_to_its_folder(tmp_path: Path, outside: Path) -> None:
    text = 'include "../elsewhere/passwords.flow"\n'
    loaded = load_source(text, str(tmp_path / "project" / "main.flow"))
    assert [d.code for d in loaded.diagnostics] == ["E112"]
