"""modprobe.d reading as kmod does it: file selection, precedence and order, line syntax, kernel bool values,
the command line's place after all files, and the persisted verdict with its conflicts and problems."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import HostRoots
from agent.discover import modprobe
from agent.discover.procfs import parse_cmdline_netns_mode
from agent.model import ModprobeOption, NetnsMode

FIXTURES = Path(__file__).parent.parent / "fixtures" / "modprobe"
EXCL, SHARED = NetnsMode.EXCLUSIVE, NetnsMode.SHARED


def roots_of(tree: str | Path) -> HostRoots:
    return HostRoots(root=FIXTURES / tree if isinstance(tree, str) else tree)


def opt(source: str, raw: str, value: NetnsMode | None) -> ModprobeOption:
    return ModprobeOption(source=source, raw=raw, value=value)


# --- the kernel's bool parser and argument splitter ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("Y", True),
        ("y", True),
        ("yes", True),
        ("on", True),
        ("ON", True),
        ("true", True),
        ("T", True),
        ("0", False),
        ("N", False),
        ("no", False),
        ("off", False),
        ("Off", False),
        ("false", False),
        ("F", False),
        ("10", True),  # only the first character counts
        ("", None),
        ("o", None),
        ("oz", None),
        ("exclusive", None),
        ("shared", None),
        ("2", None),
        ("-1", None),
        (" 0", None),
    ],
)
def test_kstrtobool(text: str, expected: bool | None) -> None:
    assert modprobe.kstrtobool(text) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, SHARED), ("0", EXCL), ("1", SHARED), ("N", EXCL), ("Y", SHARED), ("", None), ("junk", None)],
)
def test_netns_mode_of(value: str | None, expected: NetnsMode | None) -> None:
    assert modprobe.netns_mode_of(value) is expected


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("netns_mode=0", [("netns_mode", "0")]),
        ("  a=1\tb=2  c ", [("a", "1"), ("b", "2"), ("c", None)]),
        ('netns_mode="0" x="a b"', [("netns_mode", "0"), ("x", "a b")]),
        ('"netns_mode=0" next', [("netns_mode", "0"), ("next", None)]),
        ("a=1 -- netns_mode=0", [("a", "1")]),  # parse_args stops at a bare --
        ("netns_mode= x=", [("netns_mode", ""), ("x", "")]),
        ("", []),
    ],
)
def test_kernel_args(args: str, expected: list[tuple[str, str | None]]) -> None:
    assert modprobe.kernel_args(args) == expected


# --- one file's text -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("options ib_core netns_mode=0\n", [("f:1", "0", EXCL)]),
        ("options ib_core netns_mode=1", [("f:1", "1", SHARED)]),  # no final newline
        ("options ib-core netns-mode=N\n", [("f:1", "N", EXCL)]),
        ("options\tib_core\t\tnetns_mode=off\n", [("f:1", "off", EXCL)]),
        ("options ib_core netns_mode=1 netns_mode=0\n", [("f:1", "1", SHARED), ("f:1", "0", EXCL)]),
        ("options ib_core netns_mode\n", [("f:1", "", SHARED)]),  # no '=' means Y
        ("options ib_core netns_mode=\n", [("f:1", "", None)]),
        ("options ib_core netns_mode=maybe\n", [("f:1", "maybe", None)]),
        ("options ib_core netns_mode=0 # exclusive for SR-IOV\n", [("f:1", "0", EXCL)]),
        ("# options ib_core netns_mode=0\n", []),
        ("   # options ib_core netns_mode=0\n", []),  # not a comment to kmod, but a bad line: ignored
        ("  options ib_core netns_mode=0\n", [("f:1", "0", EXCL)]),  # leading blanks are fine
        ("options ib_core \\\n    netns_mode=0\n", [("f:1", "0", EXCL)]),
        (
            "\n\noptions ib_core log_level=1 \\\nnetns_mode=0\noptions ib_core netns_mode=1\n",
            [("f:3", "0", EXCL), ("f:5", "1", SHARED)],
        ),  # continuation keeps later line numbers right
        ("options ib_core netns\\_mode=0\n", [("f:1", "0", EXCL)]),  # backslash + char: char kept
        ("options ib_core\n", []),
        ("options mlx5_core netns_mode=0\noptions ib_core_x netns_mode=0\n", []),
        ("install ib_core /sbin/modprobe --ignore-install ib_core netns_mode=0\n", []),
        ("options ib_core -- netns_mode=0\n", []),
        ("Options ib_core netns_mode=0\n", []),  # commands are case-sensitive
    ],
)
def test_parse_conf(text: str, expected: list[tuple[str, str, NetnsMode | None]]) -> None:
    assert modprobe.parse_conf(text, "f") == tuple(opt(*e) for e in expected)


def test_logical_lines_follow_kmod_freadline_wrapped() -> None:
    text = "a \\\nb\n\nc\\\\d\ne\\"
    assert list(modprobe.logical_lines(text)) == [(1, "a b"), (3, ""), (4, "c\\d"), (5, "e")]


# --- which files, in which order -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ("none", ["/etc/modprobe.d/blacklist.conf"]),
        ("shadowed", ["/etc/modprobe.d/ib_core.conf"]),
        (
            "ordering",
            ["/etc/modprobe.d/00-local.conf", "/lib/modprobe.d/50-distro.conf", "/usr/lib/modprobe.d/zz-vendor.conf"],
        ),
        ("hidden", ["/etc/modprobe.d/ib_core.conf"]),
        ("no-such-tree", []),
    ],
)
def test_effective_order_of_fixture_trees(tree: str, expected: list[str]) -> None:
    roots = roots_of(tree)
    assert [roots.display(p) for p in [c.path for c in modprobe.conf_files(roots)]] == expected


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_effective_order_filters_and_follows_host_symlinks(tmp_path: Path) -> None:
    etc, run, usr = tmp_path / "etc/modprobe.d", tmp_path / "run/modprobe.d", tmp_path / "usr/lib/modprobe.d"
    write(usr / "masked.conf", "options ib_core netns_mode=1\n")
    write(tmp_path / "dev/null", "")
    etc.mkdir(parents=True)
    (etc / "masked.conf").symlink_to("/dev/null")  # absolute: must resolve inside the host root
    write(tmp_path / "usr/share/rdma/site.conf", "options ib_core netns_mode=0\n")
    (etc / "site.conf").symlink_to("/usr/share/rdma/site.conf")
    (etc / "dangling.conf").symlink_to("/nowhere.conf")  # cannot stat: skipped, does not hide
    write(usr / "dangling.conf", "")
    (etc / "dir.conf").mkdir()  # directories are skipped
    (etc / "loop.conf").symlink_to("loop.conf")
    write(run / "B.conf", "")  # strcmp order: upper case sorts before lower case
    write(etc / "a.conf", "")
    order = [c.path for c in modprobe.conf_files(HostRoots(root=tmp_path))]
    assert [str(p.relative_to(tmp_path)) for p in order] == [
        "run/modprobe.d/B.conf",
        "etc/modprobe.d/a.conf",
        "usr/lib/modprobe.d/dangling.conf",
        "etc/modprobe.d/masked.conf",
        "etc/modprobe.d/site.conf",
    ]
    persisted, problems = modprobe.read_persisted_netns_mode(HostRoots(root=tmp_path), None)
    assert (persisted.value, persisted.source, problems) == (EXCL, "/etc/modprobe.d/site.conf:1", ())


def test_a_config_path_that_is_a_file_is_read_itself(tmp_path: Path) -> None:
    write(tmp_path / "etc/modprobe.d", "options ib_core netns_mode=0\n")
    persisted, _ = modprobe.read_persisted_netns_mode(HostRoots(root=tmp_path), None)
    assert (persisted.value, persisted.source) == (EXCL, "/etc/modprobe.d:1")


# --- the verdict over fixture trees ----------------------------------------------------------------------

IB = "/etc/modprobe.d/ib_core.conf"
CMDLINE = "/proc/cmdline"


@pytest.mark.parametrize(
    ("tree", "cmdline", "value", "source", "options", "problems"),
    [
        ("none", "", None, None, [], []),
        ("exclusive", "", EXCL, f"{IB}:1", [(f"{IB}:1", "0", EXCL)], []),
        (
            "seed_appended",
            "",
            EXCL,
            f"{IB}:3",
            [(f"{IB}:1", "0", EXCL), (f"{IB}:2", "0", EXCL), (f"{IB}:3", "0", EXCL)],
            [("modprobe_duplicate", f"{IB}:1"), ("modprobe_duplicate", f"{IB}:2")],
        ),
        ("shadowed", "", EXCL, f"{IB}:1", [(f"{IB}:1", "0", EXCL)], []),
        (
            "ordering",
            "",
            SHARED,
            "/usr/lib/modprobe.d/zz-vendor.conf:1",
            [("/etc/modprobe.d/00-local.conf:1", "0", EXCL), ("/usr/lib/modprobe.d/zz-vendor.conf:1", "1", SHARED)],
            [("modprobe_conflict", "/etc/modprobe.d/00-local.conf:1")],
        ),
        (
            "exclusive",
            "quiet ib_core.netns_mode=1",
            SHARED,
            CMDLINE,
            [(f"{IB}:1", "0", EXCL), (CMDLINE, "1", SHARED)],
            [("modprobe_conflict", f"{IB}:1")],
        ),
        (
            "exclusive",
            "ib_core.netns_mode=0",
            EXCL,
            CMDLINE,
            [(f"{IB}:1", "0", EXCL), (CMDLINE, "0", EXCL)],
            [("modprobe_duplicate", f"{IB}:1")],
        ),
        ("none", "ib-core.netns-mode=N", EXCL, CMDLINE, [(CMDLINE, "N", EXCL)], []),
        ("invalid", "", None, None, [(f"{IB}:1", "exclusive", None)], [("modprobe_invalid_value", f"{IB}:1")]),
        (
            "exclusive",
            "ib_core.netns_mode=bogus",
            EXCL,
            f"{IB}:1",
            [(f"{IB}:1", "0", EXCL), (CMDLINE, "bogus", None)],
            [("modprobe_invalid_value", CMDLINE)],
        ),
        ("comments", "", EXCL, "/etc/modprobe.d/rdma.conf:4", [("/etc/modprobe.d/rdma.conf:4", "0", EXCL)], []),
        ("hyphen", "", EXCL, "/etc/modprobe.d/rdma.conf:1", [("/etc/modprobe.d/rdma.conf:1", "off", EXCL)], []),
        ("hidden", "", EXCL, f"{IB}:1", [(f"{IB}:1", "0", EXCL)], []),
    ],
)
def test_persisted_verdict(
    tree: str,
    cmdline: str,
    value: NetnsMode | None,
    source: str | None,
    options: list[tuple[str, str, NetnsMode | None]],
    problems: list[tuple[str, str]],
) -> None:
    roots = roots_of(tree)
    persisted, found = modprobe.read_persisted_netns_mode(roots, parse_cmdline_netns_mode(cmdline))
    assert (persisted.value, persisted.source) == (value, source)
    assert persisted.options == tuple(opt(*o) for o in options)
    assert [(p.code, p.subject) for p in found] == problems
    winner = [o for o in persisted.options if o.source == source][-1:] if source else []
    assert list(persisted.conflicts) == [o for o in persisted.options if o not in winner]
    for problem in found:
        assert problem.subject is not None and problem.subject in problem.message
        if problem.code in ("modprobe_conflict", "modprobe_duplicate"):
            assert source is not None and source in problem.message
    if source is not None and source != CMDLINE:
        shown_file = source.rsplit(":", 1)[0]
        assert persisted.source_mtime == (roots.root / shown_file.lstrip("/")).stat().st_mtime
    else:
        assert persisted.source_mtime is None


def test_problem_messages_read_as_sentences() -> None:
    _, problems = modprobe.read_persisted_netns_mode(roots_of("ordering"), None)
    assert problems[0].message == (
        "/etc/modprobe.d/00-local.conf:1 sets ib_core netns_mode=0 (exclusive) but "
        "/usr/lib/modprobe.d/zz-vendor.conf:1, applied later, sets netns_mode=1 (shared), so the setting in "
        "/etc/modprobe.d/00-local.conf:1 has no effect."
    )
    _, problems = modprobe.read_persisted_netns_mode(roots_of("invalid"), None)
    assert "netns_mode='exclusive'" in problems[0].message
    assert "Invalid argument" in problems[0].message


def test_resolve_persisted_is_pure_and_last_valid_wins() -> None:
    options = [opt("a:1", "1", SHARED), opt("b:1", "0", EXCL), opt("c:1", "x", None)]
    persisted, problems = modprobe.resolve_persisted(options, 123.0)
    assert (persisted.value, persisted.source, persisted.source_mtime) == (EXCL, "b:1", 123.0)
    assert persisted.conflicts == (options[0], options[2])
    assert [p.code for p in problems] == ["modprobe_conflict", "modprobe_invalid_value"]
    empty, none = modprobe.resolve_persisted([], 5.0)
    assert (empty.value, empty.source, empty.source_mtime, none) == (None, None, None, ())


def test_unreadable_file_is_a_problem_not_an_exception(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    etc = tmp_path / "etc/modprobe.d"
    write(etc / "ib_core.conf", "options ib_core netns_mode=0\n")
    monkeypatch.chdir(etc)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind("mlnx.conf")  # stat() works, open() fails with ENXIO: the one file root cannot read
        persisted, problems = modprobe.read_persisted_netns_mode(HostRoots(root=tmp_path), None)
    assert (persisted.value, persisted.source) == (EXCL, f"{IB}:1")
    assert [(p.code, p.subject) for p in problems] == [("modprobe_unreadable", "/etc/modprobe.d/mlnx.conf")]
