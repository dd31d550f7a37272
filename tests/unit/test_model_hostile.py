"""Hostile cluster descriptions: deep nesting, alias bombs, huge files and values the YAML
constructor chokes on are refused with a ConfigError naming the line, never an exception that
escapes; a reload of such a file keeps the old model; `bootstrapperd check` exits 1 without a
traceback. Legitimate aliases and merge keys still load."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from bootstrapperd import cli
from bootstrapperd.model import ConfigError
from bootstrapperd.model import holder as holder_module
from bootstrapperd.model.holder import ModelHolder
from bootstrapperd.model.load import load_cluster_text, read_cluster_file
from bootstrapperd.model.yamlsrc import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_REREAD_CHARS,
    MAX_VALUES,
    YAMLLimitError,
)
from tests.conftest import EXAMPLE, SEXTANT_FIXTURES

DEEP = 50_000  # the depth of the reported file that broke the SIGHUP handler


def flow_nested(depth: int) -> str:
    """A valid description followed by one key whose value is `depth` nested flow lists."""
    return EXAMPLE.read_text() + "deep: " + "[" * depth + "]" * depth + "\n"


def block_nested(depth: int) -> str:
    """`depth` nested block mappings, one per line: the value on line n is n levels deep."""
    return "".join(f"{'  ' * level}k{level}:\n" for level in range(depth)) + "  " * depth + "x\n"


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Billion laughs: each level a list of `width` aliases of the level before it."""
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9, width: int = 9) -> str:
    """The same explosion through merge keys (`<<`), which PyYAML flattens by copying."""
    lines = ["m0: &m0 {a: 1, b: 2}"]
    for level in range(1, levels + 1):
        refs = ", ".join([f"*m{level - 1}"] * width)
        lines.append(f"m{level}: &m{level} {{<<: [{refs}]}}")
    return "\n".join(lines) + "\n"


def errors(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_the_bounds_hold_every_real_description() -> None:
    for path in (*SEXTANT_FIXTURES, EXAMPLE):
        assert len(path.read_bytes()) < MAX_DOCUMENT_BYTES
        read_cluster_file(path)  # raises on a refusal


def test_deep_flow_nesting_is_refused_with_its_line() -> None:
    text = flow_nested(DEEP)
    line = text.count("\n")  # the last line holds the nested value
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    assert errors(exc) == [f"the document is nested deeper than {MAX_DEPTH} levels (line {line})"]


def test_deep_block_nesting_names_the_first_line_too_deep() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(block_nested(DEEP // 100))
    # The top mapping is level 1 and its keys level 2: the key on line n is at level n + 1.
    assert errors(exc) == [
        f"the document is nested deeper than {MAX_DEPTH} levels (line {MAX_DEPTH})"
    ]


def test_nesting_at_the_bound_is_accepted_by_the_reader() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(block_nested(MAX_DEPTH - 1))
    assert not any("nested deeper" in p for p in errors(exc))  # only "unknown key" and such


def test_aliases_cannot_rebuild_the_depth() -> None:
    # Each anchor is shallow, but each one nests the one before it: 200 levels once expanded.
    lines = ["a0: &a0 [1]"]
    lines += [f"a{n}: &a{n} [*a{n - 1}]" for n in range(1, 200)]
    with pytest.raises(ConfigError) as exc:
        load_cluster_text("\n".join(lines) + "\n")
    assert errors(exc) == [
        f"the document is nested deeper than {MAX_DEPTH} levels (line {MAX_DEPTH - 1})"
    ]


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(alias_bomb())
    # Levels 0 to 5 expand to 74739 values with their keys, level 6 to 597871: the line of l6.
    assert errors(exc) == [f"aliases expand the document to more than {MAX_VALUES} values (line 7)"]


def test_merge_key_bomb_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(merge_bomb())
    # m4 expands to 35265 values, m5 to 317388: the line of m5.
    assert errors(exc) == [f"aliases expand the document to more than {MAX_VALUES} values (line 6)"]


def test_recursive_alias_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text("bootstrapper: 10.0.0.1\nloop: &loop\n  - 1\n  - *loop\n")
    assert errors(exc) == ["alias *loop refers to a value that contains it (line 4)"]


def test_a_collection_as_key_cannot_expand_a_bomb() -> None:
    # The anchors take 74739 values and each use of l5 as a key 66430 more: the first crosses.
    text = alias_bomb(levels=5) + "? *l5\n: 1\n" * 20
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    assert errors(exc) == [f"aliases expand the document to more than {MAX_VALUES} values (line 7)"]


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "cluster-desc.yml"
    comment = "# " + "x" * 1021 + "\n"  # 1 KiB a line
    lines = MAX_DOCUMENT_BYTES // len(comment) + 10
    path.write_text(EXAMPLE.read_text() + comment * lines)
    over = MAX_DOCUMENT_BYTES - len(EXAMPLE.read_bytes())
    line = EXAMPLE.read_text().count("\n") + over // len(comment) + 1
    mib = MAX_DOCUMENT_BYTES // (1 << 20)
    with pytest.raises(ConfigError) as exc:
        read_cluster_file(path)
    assert errors(exc) == [f"the file is larger than {mib} MiB (line {line})"]
    with pytest.raises(ConfigError) as text_exc:
        load_cluster_text(path.read_text())
    assert errors(text_exc) == errors(exc)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1" * 5000, "Exceeds the limit (4300 digits) for integer string conversion"),
        ("2001-13-45", "month must be in 1..12"),
        ("!!timestamp nope", "cannot read"),
    ],
)
def test_a_value_the_constructor_rejects_is_a_config_error(value: str, reason: str) -> None:
    text = EXAMPLE.read_text() + f"surprise: {value}\n"
    line = text.count("\n")
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    (problem,) = errors(exc)
    assert problem.startswith("cannot read ")
    assert reason in problem
    assert problem.endswith(f"(line {line})")


def test_a_few_legitimate_aliases_and_merge_keys_still_load() -> None:
    text = EXAMPLE.read_text()
    text = text.replace("routers: [10.77.0.1]", "routers: &gw [10.77.0.1]")
    text = text.replace("nameservers: [10.77.0.1]", "nameservers: *gw")
    worker = '  - mac: "52-54-00-77-00-11"     # any MAC spelling works\n'
    text = text.replace(worker, worker.replace("- mac", "- &worker\n    mac"))
    text += '  - <<: *worker\n    mac: "52:54:00:77:00:13"\n    cur_host_name: "worker3"\n'
    model = load_cluster_text(text)
    assert [str(r) for r in model.routers] == ["10.77.0.1"]
    assert [str(n) for n in model.nameservers] == ["10.77.0.1"]
    assert [n.hostname for n in model.nodes][-1] == "worker3"
    assert model.nodes[-1].ingress_label == model.nodes[1].ingress_label


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster-desc.yml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "kind", "reason"),
    [
        (flow_nested(DEEP), "depth", "nested deeper"),
        (alias_bomb(), "values", "aliases expand"),
        ("x: " + "y" * MAX_DOCUMENT_BYTES + "\n", "size", "larger than"),
        ("loop: &loop [*loop]\n", "loop", "refers to a value that contains it"),
    ],
    ids=["nested", "alias-bomb", "huge", "loop"],
)
def test_reload_of_a_hostile_file_keeps_the_model_and_counts_it(
    tmp_path: Path, text: str, kind: str, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, EXAMPLE.read_text())
    holder = ModelHolder.load(path)
    first = holder.model
    path.write_text(text)
    with caplog.at_level(logging.ERROR, logger="bootstrapperd"):
        assert holder.reload() is False
    assert (holder.model, holder.generation) == (first, 1)
    assert any(reason in r.getMessage() for r in caplog.records)
    assert holder.counters == {"reload_failed": 1, f"refused_{kind}": 1}


@pytest.mark.parametrize(
    "error", [RecursionError("maximum recursion depth exceeded"), MemoryError(), KeyError("x")]
)
def test_reload_survives_whatever_the_loader_raises(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
) -> None:
    holder = ModelHolder.load(write(tmp_path, EXAMPLE.read_text()))
    first = holder.model

    def explode(path: Path) -> object:
        raise error

    monkeypatch.setattr(holder_module, "read_cluster_file", explode)
    with caplog.at_level(logging.ERROR, logger="bootstrapperd"):
        assert holder.reload() is False
    assert holder.model is first
    assert holder.counters["reload_crashed"] == 1
    assert any(type(error).__name__ in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (flow_nested(DEEP), f"nested deeper than {MAX_DEPTH} levels"),
        (alias_bomb(), f"aliases expand the document to more than {MAX_VALUES} values (line 7)"),
    ],
    ids=["nested", "alias-bomb"],
)
def test_check_refuses_hostile_files_with_exit_1_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    assert cli.main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert expected in captured.err
    assert "Traceback" not in captured.out + captured.err


@pytest.mark.parametrize(
    "error", [RecursionError("maximum recursion depth exceeded"), MemoryError()]
)
def test_check_reports_an_exhausted_loader_without_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    error: Exception,
) -> None:
    path = write(tmp_path, EXAMPLE.read_text())

    def explode(path: Path) -> object:
        raise error

    monkeypatch.setattr(cli, "load_cluster_file", explode)
    assert cli.main(["check", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(f"{path}: cannot load: {type(error).__name__}")
    assert "Traceback" not in captured.out + captured.err


def test_without_libyaml_the_same_files_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yaml, "__with_libyaml__", False)  # PyYAML's own parser reads it all
    with pytest.raises(ConfigError) as deep:
        load_cluster_text(block_nested(DEEP // 100))
    assert errors(deep) == [
        f"the document is nested deeper than {MAX_DEPTH} levels (line {MAX_DEPTH})"
    ]
    with pytest.raises(ConfigError) as bomb:
        load_cluster_text(alias_bomb())
    assert errors(bomb) == [
        f"aliases expand the document to more than {MAX_VALUES} values (line 7)"
    ]
    assert [n.hostname for n in load_cluster_text(EXAMPLE.read_text()).nodes] == [
        n.hostname for n in read_cluster_file(EXAMPLE)[0].nodes
    ]


def test_a_large_file_that_is_not_yaml_keeps_libyamls_words() -> None:
    filler = "# " + "x" * 1021 + "\n"
    text = EXAMPLE.read_text() + filler * (MAX_REREAD_CHARS // len(filler)) + "oops: b: c\n"
    line = text.count("\n")
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    # PyYAML would say "mapping values are not allowed here", after reading it all again.
    assert errors(exc) == [
        f"YAML syntax error: mapping values are not allowed in this context (line {line})"
    ]
    with pytest.raises(ConfigError) as small:
        load_cluster_text(EXAMPLE.read_text() + "oops: b: c\n")
    assert errors(small) == [
        "YAML syntax error: mapping values are not allowed here "
        f"(line {EXAMPLE.read_text().count(chr(10)) + 1})"
    ]


def test_a_control_character_is_a_config_error_with_its_line() -> None:
    text = EXAMPLE.read_text() + "surprise: a\x01b\n"
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    assert errors(exc) == [
        "YAML syntax error: character #x0001: special characters are not allowed "
        f"(line {text.count(chr(10))})"
    ]


def test_a_large_deep_file_is_refused_as_too_deep_without_rereading() -> None:
    # Past MAX_REREAD_CHARS, libyaml's own nesting limit (1,000) is what stops the scanner.
    padding = "".join(f"pad{n}: {n}\n" for n in range(MAX_REREAD_CHARS // 8))
    text = padding + "deep: " + "[" * DEEP + "]" * DEEP + "\n"
    assert len(padding) > MAX_REREAD_CHARS
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    assert errors(exc) == [
        f"the document is nested deeper than {MAX_DEPTH} levels (line {text.count(chr(10))})"
    ]
    assert isinstance(exc.value.__cause__, YAMLLimitError)
    assert exc.value.__cause__.kind == "depth"
