"""`bootstrapperd check` tells the whole story (issue 18): the OS and Kubernetes it will install
and where each came from, warnings for versions that cannot exist and for installing unknown
machines, every error at once in line order (cross-checks included), YAML syntax errors on the
line a person would point at, and bombs refused with a clear error, never a hang or a blow-up."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from bootstrapperd import cli
from bootstrapperd.model import ConfigError, Problem, Severity, load_cluster_file
from bootstrapperd.model.load import load_cluster_text
from bootstrapperd.model.summary import render_summary
from bootstrapperd.model.yamlsrc import MAX_DOCUMENT_BYTES, MAX_VALUES
from tests.conftest import EXAMPLE, REPO, SEXTANT_FIXTURES

SAMPLE = next(p for p in SEXTANT_FIXTURES if p.name == "cluster-desc.sample.yaml")
V02 = next(p for p in SEXTANT_FIXTURES if p.name == "cluster-desc.v0.2.sample.yaml")


def line_of(text: str, needle: str) -> int:
    """The 1-based line of the first line of ``text`` that contains ``needle``."""
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} is not in the text")


def summary_line(model_text: str, label: str) -> str:
    model = load_cluster_text(model_text)
    return next(
        line.strip()
        for line in render_summary(model).splitlines()
        if line.strip().startswith(label)
    )


def warnings_at(text: str, path: str) -> list[str]:
    return [w.message for w in load_cluster_text(text).warnings if w.path == path]


def with_os(text: str, block: str) -> str:
    """The example with its `os` block replaced by ``block`` (YAML lines, or "" for none)."""
    old = "os:\n  name: flatcar\n  channel: stable\n  version: current\n"
    assert old in text
    return text.replace(old, block)


# ---- the summary: what will be installed, and where each part came from -------------------------
def test_sextant_sample_says_where_its_os_and_kubernetes_came_from() -> None:
    text = SAMPLE.read_text()
    assert summary_line(text, "OS") == (
        "OS            flatcar stable 1122.2.0 "
        "(from coreos_channel / coreos_version, Sextant keys; name flatcar by default)"
    )
    assert summary_line(text, "Kubernetes").startswith(
        "Kubernetes    v1.6.2 (from the tag of images.hyperkube); masters node1;"
    )


def test_os_block_and_defaults_are_named_as_sources() -> None:
    example = EXAMPLE.read_text()
    assert summary_line(example, "OS") == (
        "OS            flatcar stable current (from os.name / os.channel / os.version)"
    )
    assert summary_line(with_os(example, ""), "OS") == (
        "OS            flatcar stable current (the defaults)"
    )
    mixed = with_os(example, "os:\n  version: 3815.2.0\ncoreos_channel: beta\n")
    assert summary_line(mixed, "OS") == (
        "OS            flatcar beta 3815.2.0 (from coreos_channel / os.version, coreos_channel "
        "is a Sextant key; name flatcar by default)"
    )
    assert summary_line(example, "Kubernetes").startswith("Kubernetes    v1.31.4 (the default);")
    pinned = example + "kubernetes_version: 1.30.2\n"
    assert summary_line(pinned, "Kubernetes").startswith(
        "Kubernetes    v1.30.2 (from kubernetes_version);"
    )


def test_the_sources_are_on_the_model() -> None:
    model = load_cluster_file(SAMPLE)
    assert model.os.source == (
        "from coreos_channel / coreos_version, Sextant keys; name flatcar by default"
    )
    assert model.kubernetes_version_source == "the tag of images.hyperkube"


# ---- warnings: versions that cannot exist, machines that will be wiped ---------------------------
def test_sextant_sample_warns_of_a_coreos_version_on_flatcar_and_an_old_kubernetes() -> None:
    text = SAMPLE.read_text()
    model = load_cluster_text(text)
    found = {w.path: str(w) for w in model.warnings}
    warning = found["coreos_version"]
    assert warning.startswith(
        "coreos_version: 1122.2.0 cannot be a Flatcar release: the first was 1688.5.3 (April 2018)"
    )
    assert "CoreOS Container Linux" in warning
    assert warning.endswith(f"(line {line_of(text, 'coreos_version:')})")
    assert found["images.hyperkube"].startswith(
        "images.hyperkube: Kubernetes v1.6.2 (the tag of images.hyperkube) is older than v1.24"
    )
    assert found["images.hyperkube"].endswith(f"(line {line_of(text, 'hyperkube:')})")
    assert "dhcp.unknown_machines" in found


@pytest.mark.parametrize(
    ("block", "warned"),
    [
        ("os:\n  version: 3815.2.0\n", None),
        ("os:\n  version: current\n", None),
        ("os:\n  version: 1688.5.3\n", None),
        ("os:\n  version: 1688.5.2\n", "cannot be a Flatcar release"),
        ("os:\n  version: 3815.2\n", "has 2 parts; Flatcar releases have three"),
        ("os:\n  version: 40.20240416.3.1\n", "a Fedora CoreOS version"),
        (
            "os:\n  name: coreos\n  version: 2605.1.0\n  mirror: http://mirror.test/os\n",
            "cannot be a CoreOS Container Linux release",
        ),
        ("os:\n  name: coreos\n  version: 1235.0.0\n  mirror: http://mirror.test/os\n", None),
    ],
    ids=[
        "flatcar",
        "current",
        "first-flatcar",
        "before-flatcar",
        "two-parts",
        "fedora-coreos",
        "after-coreos",
        "coreos",
    ],
)
def test_a_version_that_cannot_exist_for_the_os_is_a_warning(
    block: str, warned: str | None
) -> None:
    text = with_os(EXAMPLE.read_text(), block)
    found = warnings_at(text, "os.version")
    if warned is None:
        assert found == []
    else:
        (message,) = found
        assert warned in message


def test_coreos_without_a_mirror_warns_that_its_servers_are_gone() -> None:
    text = with_os(EXAMPLE.read_text(), "os:\n  name: coreos\n  version: 1235.0.0\n")
    (message,) = warnings_at(text, "os.name")
    assert "release servers" in message
    assert "os.mirror" in message
    mirrored = text.replace("version: 1235.0.0\n", "version: 1235.0.0\n  mirror: file:///m\n")
    assert warnings_at(mirrored, "os.name") == []


@pytest.mark.parametrize(
    ("extra", "warned"),
    [
        ("kubernetes_version: v1.23.17\n", True),
        ("kubernetes_version: v1.24.0\n", False),
        ("kubernetes_version: v1.31.4\n", False),
        ("kubernetes_version: v0.21.4\n", True),
    ],
)
def test_a_kubernetes_too_old_for_the_templates_is_a_warning(extra: str, warned: bool) -> None:
    found = warnings_at(EXAMPLE.read_text() + extra, "kubernetes_version")
    assert bool(found) is warned
    if warned:
        assert "older than v1.24" in found[0]


@pytest.mark.parametrize("mode", ["full", "proxy", "off"])
def test_unknown_machines_allow_says_plainly_that_they_are_wiped(mode: str) -> None:
    text = EXAMPLE.read_text().replace("mode: full ", f"mode: {mode} ")
    (message,) = warnings_at(text, "dhcp.unknown_machines")
    assert "any machine" in message
    assert "is installed" in message
    assert "wiped" in message
    assert "unknown_machines: ignore" in message
    ignoring = text.replace("unknown_machines: allow", "unknown_machines: ignore")
    assert warnings_at(ignoring, "dhcp.unknown_machines") == []


def test_check_prints_the_new_lines_and_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", str(SAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "(from coreos_channel / coreos_version, Sextant keys;" in out
    assert "v1.6.2 (from the tag of images.hyperkube)" in out
    assert "cannot be a Flatcar release" in out
    assert len(out.splitlines()) <= 40  # still one screen


def test_every_bundled_description_still_loads() -> None:
    shared = REPO.parent / "shared" / "sextant"
    extra = sorted(shared.iterdir()) if shared.is_dir() else []
    for path in (*SEXTANT_FIXTURES, *extra, EXAMPLE):
        load_cluster_file(path)


# ---- every error at once, in line order ----------------------------------------------------------
BROKEN = textwrap.dedent(
    """\
    bootstrapper: 10.1.0.1
    subnet: 10.1.0.0
    netmask: 255.255.255.0
    iplow: 10.1.0.100
    iphigh: 10.1.0.200
    lease: "a fortnight"
    routers: [10.1.0.254]
    nameservers: [10.1.0.1]
    domainname: "not a domain"
    dockerdomain: bootstrapper
    images: {pause: "registry.k8s.io/pause:3.9"}
    nodes:
      - mac: "52:54:00:00:00:01"
        cur_host_name: m1
        ip: 10.1.0.10
        kube_master: y
        etcd_member: y
      - mac: "52:54:00:00:00:02"
        cur_host_name: w1
        ip: 10.1.0.10
      - mac: "52:54:00:00:00:01"
        cur_host_name: w2
    """
)


def test_bad_keys_and_cross_checks_are_all_reported_in_line_order() -> None:
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(BROKEN, source="t.yml")
    assert [str(p) for p in exc.value.problems] == [
        "lease: 'a fortnight' is not a lease time (infinite, 24h, 30m, 3600) (line 6)",
        "domainname: 'not a domain' is not a valid DNS domain name (line 9)",
        "nodes[1].ip: 10.1.0.10 is also nodes[0]'s address (line 20)",
        "nodes[2].mac: 52:54:00:00:00:01 is also nodes[0]'s MAC (line 21)",
    ]
    report = exc.value.report()
    assert report.startswith("t.yml: 4 error(s):\n  lease: ")
    assert report.index("(line 9)") < report.index("(line 20)") < report.index("(line 21)")


def test_cross_checks_run_without_a_network_or_a_bootstrapper() -> None:
    text = BROKEN.replace("netmask: 255.255.255.0", "netmask: 255.0.255.0").replace(
        "bootstrapper: 10.1.0.1\n", ""
    )
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    found = [str(p) for p in exc.value.problems]
    assert "nodes[2].mac: 52:54:00:00:00:01 is also nodes[0]'s MAC (line 20)" in found
    assert "nodes[1].ip: 10.1.0.10 is also nodes[0]'s address (line 19)" in found
    assert any(p.startswith("netmask: ") for p in found)
    assert any(p.startswith("bootstrapper: required key is missing") for p in found)


def test_broken_nodes_are_not_duplicates_of_each_other() -> None:
    text = BROKEN.replace('"52:54:00:00:00:02"', '"zz"').replace('"52:54:00:00:00:01"', '"yy"')
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    assert not [p for p in exc.value.problems if "is also" in p.message and "MAC" in p.message]


def test_report_sorts_by_line_and_puts_lineless_problems_last() -> None:
    error = ConfigError(
        "x.yml",
        [
            Problem(Severity.ERROR, "b", "second", 9),
            Problem(Severity.ERROR, "", "whole file"),
            Problem(Severity.WARNING, "w", "late warning", 30),
            Problem(Severity.ERROR, "a", "first", 2),
            Problem(Severity.WARNING, "v", "early warning", 3),
        ],
    )
    assert error.report().splitlines() == [
        "x.yml: 3 error(s):",
        "  a: first (line 2)",
        "  b: second (line 9)",
        "  whole file",
        "and 2 warning(s):",
        "  v: early warning (line 3)",
        "  w: late warning (line 30)",
    ]


# ---- YAML syntax errors: the line the mistake is on ----------------------------------------------
EXAMPLE_TEXT = EXAMPLE.read_text()
MISTAKES = {
    # name: (the line as it is in the example, the line with the mistake)
    "tab-indentation": ("  channel: stable", "\tchannel: stable"),
    "unclosed-double-quote": ('domainname: "cluster.example"', 'domainname: "cluster.example'),
    "unclosed-quote-at-the-end": (
        '    cur_host_name: ""            # empty',
        "    cur_host_name: '           # empty",
    ),
    "list-item-indented-too-far": (
        '  - mac: "52-54-00-77-00-11"',
        '   - mac: "52-54-00-77-00-11"',
    ),
    "list-item-indented-too-little": ('  - mac: "5254.0077.0012"', ' - mac: "5254.0077.0012"'),
    "key-in-item-indented-too-little": (
        '    cur_host_name: "worker1"',
        '   cur_host_name: "worker1"',
    ),
    "missing-colon": ("set_ntp: y", "set_ntp y"),
    "missing-colon-in-a-node": ("    etcd_member: y", "    etcd_member y"),
    "missing-colon-on-a-block-key": ("nodes:", "nodes"),
    "unclosed-flow-list": ("routers: [10.77.0.1]", "routers: [10.77.0.1"),
    "space-missing-after-colon": ('lease: "12h"', 'lease:"12h"'),
}


@pytest.mark.parametrize("libyaml", [True, False], ids=["libyaml", "pyyaml"])
@pytest.mark.parametrize("name", list(MISTAKES))
def test_a_syntax_error_names_the_line_the_mistake_is_on(
    name: str, libyaml: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    good, bad = MISTAKES[name]
    assert good in EXAMPLE_TEXT
    text = EXAMPLE_TEXT.replace(good, bad, 1)
    if not libyaml:
        monkeypatch.setattr(yaml, "__with_libyaml__", False)
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(text)
    (problem,) = exc.value.problems
    assert problem.message.startswith("YAML syntax error: ")
    assert problem.line == text[: text.index(bad)].count("\n") + 1, str(problem)


def test_an_unclosed_quote_says_so() -> None:
    good, bad = MISTAKES["unclosed-double-quote"]
    with pytest.raises(ConfigError) as exc:
        load_cluster_text(EXAMPLE_TEXT.replace(good, bad))
    (problem,) = exc.value.problems
    assert "closing quote" in problem.message


# ---- bombs and absurd sizes: a clear error, no hang, no blow-up ---------------------------------
LIMIT = 1 << 30  # address space of the child: far below what an expanded bomb would need

CHILD = textwrap.dedent(
    """\
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (@LIMIT@, @LIMIT@))
    resource.setrlimit(resource.RLIMIT_CPU, (120, 120))  # a guard against a hang, not a measure
    import json, sys
    from pathlib import Path
    from bootstrapperd.model import ConfigError
    from bootstrapperd.model.load import load_cluster_text, read_cluster_file
    kind, arg = sys.argv[1], sys.argv[2]
    try:
        if kind == "file":
            read_cluster_file(Path(arg))
        else:
            load_cluster_text(Path(arg).read_text())
    except ConfigError as exc:
        print(json.dumps({"errors": [str(p) for p in exc.problems]}))
    except MemoryError:
        print(json.dumps({"crash": "MemoryError"}))
    else:
        print(json.dumps({"loaded": True}))
    """
).replace("@LIMIT@", str(LIMIT))


def in_child(kind: str, arg: str) -> dict[str, object]:
    """Load in a child process whose memory is bounded by LIMIT (it sets the limit itself,
    before it imports anything)."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, kind, arg],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, object] = json.loads(done.stdout)
    return result


def billion_laughs(levels: int = 9, width: int = 10) -> str:
    """The classic document: lol0 a string, each further level a list of `width` aliases."""
    lines = ['lol0: &lol0 "lol"']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*lol{level - 1}"] * width)
        lines.append(f"lol{level}: &lol{level} [{refs}]")
    return "\n".join(lines) + "\n"


def first_level_over_the_bound(width: int = 10) -> int:
    """The level whose line the refusal names: values are counted as the composer meets them
    (each level's key, its list and every alias expanded), the first crossing is refused."""
    size, total, level = 1, 3, 0  # the top mapping, lol0's key and its string
    while True:
        level += 1
        size = 1 + width * size
        total += 1 + size
        if total > MAX_VALUES:
            return level


def test_the_classic_billion_laughs_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "cluster-desc.yml"
    path.write_text(billion_laughs())
    result = in_child("file", str(path))
    line = first_level_over_the_bound() + 1  # lol0 is on line 1
    assert result == {
        "errors": [f"aliases expand the document to more than {MAX_VALUES} values (line {line})"]
    }


def test_a_100_mib_description_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    node = '  - mac: "52:54:00:{:02x}:{:02x}:{:02x}"\n    cur_host_name: "n{}"\n'
    chunk = "".join(node.format(i >> 16 & 255, i >> 8 & 255, i & 255, i) for i in range(4096))
    path = tmp_path / "cluster-desc.yml"
    with path.open("w") as out:
        out.write(EXAMPLE_TEXT)
        while out.tell() < 100 << 20:
            out.write(chunk)
    mib = MAX_DOCUMENT_BYTES >> 20
    for kind in ("file", "text-file"):
        result = in_child(kind, str(path))
        errors = result["errors"]
        assert isinstance(errors, list)
        (error,) = errors
        assert str(error).startswith(f"the file is larger than {mib} MiB"), result
    path.unlink()  # 100 MiB: not kept with the test's other leftovers


def test_a_bomb_inside_the_ssh_key_block_is_refused() -> None:
    # Sextant's keys are a YAML list inside a string: it is read as hostile as the file.
    for inner in ("[" * 50_000 + "]" * 50_000, billion_laughs().replace("\n", "\n    ")):
        text = EXAMPLE_TEXT.replace(
            '    - "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ6A4YCOeE3uokw83aYlwiydyL7QBJMEpz4GykWAg'
            'mb3 operator@example"',
            "    " + inner,
        )
        with pytest.raises(ConfigError) as exc:
            load_cluster_text(text)
        (problem,) = exc.value.problems
        assert problem.path == "ssh_authorized_keys"
        assert problem.line == line_of(text, "ssh_authorized_keys:")
