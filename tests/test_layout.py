"""The redesign's layout rules, checked on the source (bench/bench_layout.py prints the same figures)."""

from __future__ import annotations

from bench.bench_layout import MAX_FUNCTION_LINES, MAX_MODULE_LINES, import_cycles, import_graph, long_functions, long_modules


def test_no_import_cycle_inside_the_package() -> None:
    assert import_cycles(import_graph()) == []


def test_no_module_over_the_line_limit() -> None:
    assert long_modules() == [], f"modules over {MAX_MODULE_LINES} lines"


def test_no_function_over_the_line_limit() -> None:
    assert long_functions() == [], f"functions over {MAX_FUNCTION_LINES} lines"


def test_a_cycle_through_a_function_level_import_is_found(tmp_path) -> None:
    package = tmp_path / "icetools"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from icetools import b\n")
    (package / "b.py").write_text("def f():\n    from icetools.a import x\n")
    (package / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from icetools import a\n")
    assert import_cycles(import_graph(package)) == [["icetools.a", "icetools.b"]]
