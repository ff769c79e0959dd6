"""Fuzzing the text parsers (hypothesis): sysfs attribute parsers (a value or ValueError), procfs and
modprobe.d parsers (never raise), the configuration loader and CLI (only ConfigError, exit 2 with one
line naming the setting), the device plugin's config.json (only ConfigError) and label validation
(never raises) — each also checked against the kernel's or Kubernetes' own format on valid input."""

from __future__ import annotations

import json
import math
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from agent.cli import main
from agent.config import Config
from agent.diagnose.plugin_config import DevicePluginConfig, parse_device_plugin_config
from agent.discover import modprobe, procfs, sysfs
from agent.errors import ConfigError
from agent.labelsyntax import validate_label
from agent.model import (
    ModprobeOption,
    NetnsMode,
    format_guid,
    node_type_name,
    phys_state_name,
    port_state_name,
)
from agent.settings import ENV_PREFIX, SETTINGS, SETTINGS_BY_KEY, load_config
from tests.kube_standin import KubeStandIn, is_qualified_name, is_valid_label_value

# Text as the agent gets it: files are read with errors="replace" (no lone surrogates), while
# directory entry names keep undecodable bytes as surrogate escapes (os.fsdecode).
file_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
entry_names = st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=40)
# Digits that are not ASCII (Unicode Nd like '٣', and '²' which str.isdigit() accepts but int() refuses).
odd_digits = st.text(st.sampled_from("0123456789٣੩²³¹⁴"), min_size=1, max_size=6)
huge_numbers = st.integers(4301, 6000).map(lambda n: "9" * n)  # past int()'s 4300-digit limit

# --- sysfs: parse_* take one attribute file's text and return a value or raise ValueError ---------

PARTIAL: list[Callable[[str], object]] = [
    sysfs.parse_port_state,
    sysfs.parse_phys_state,
    sysfs.parse_node_type,
    sysfs.parse_hex_id,
    sysfs.parse_guid,
    sysfs.parse_int,
    sysfs.parse_numa_node,
    sysfs.parse_lid,
    sysfs.parse_netns_mode,
    sysfs.parse_netdev_flags,
]


def test_every_sysfs_parser_is_fuzzed() -> None:
    public = {name for name in dir(sysfs) if name.startswith("parse_")}
    assert public == {f.__name__ for f in PARTIAL} | {"parse_text", "parse_pci_address"}


@pytest.mark.parametrize("parse", PARTIAL, ids=lambda f: f.__name__)
@given(text=file_text | odd_digits | huge_numbers | odd_digits.map(lambda d: f"{d}: ACTIVE\n"))
def test_sysfs_parsers_return_or_raise_value_error(parse: Callable[[str], object], text: str) -> None:
    try:
        parse(text)
    except ValueError as err:
        assert "\n" not in str(err).replace("\\n", "")  # one line, the text shown as a repr


@given(file_text)
def test_parse_text_is_total(text: str) -> None:
    value = sysfs.parse_text(text)
    assert value is None or (value == value.strip() and value)


@given(entry_names)
def test_parse_pci_address_is_total(name: str) -> None:
    value = sysfs.parse_pci_address(name)
    assert value is None or value == name


@given(st.integers(0, 15), st.sampled_from(["ACTIVE", "DOWN", "LinkUp", "Polling", "Phy Test", ""]))
def test_state_files_as_the_kernel_prints_them(code: int, name: str) -> None:
    text = f"{code}: {name}\n"  # drivers/infiniband/core/sysfs.c: "%d: %s\n"
    assert sysfs.parse_port_state(text) == (code, port_state_name(code))
    assert sysfs.parse_phys_state(text) == (code, phys_state_name(code))
    assert sysfs.parse_node_type(text) == node_type_name(code)


@given(st.integers(0, 0xFFFF), st.integers(0, 2**64 - 1), st.integers(-1, 2**31 - 1), st.integers(0, 0xFFFF))
def test_numbers_as_the_kernel_prints_them(ident: int, guid: int, number: int, lid: int) -> None:
    assert sysfs.parse_hex_id(f"0x{ident:04x}\n") == f"{ident:04x}"
    assert sysfs.parse_guid(format_guid(guid) + "\n") == format_guid(guid)
    assert sysfs.parse_int(f"{number}\n") == number
    assert sysfs.parse_numa_node(f"{number}\n") == (None if number < 0 else number)
    assert sysfs.parse_lid(f"0x{lid:x}\n") == lid


@given(st.sampled_from(["uverbs", "umad", "virtfn", "mlx5_", "ens1f", ""]), st.lists(st.integers(0, 300), min_size=2))
def test_natural_order_of_kernel_names(stem: str, numbers: list[int]) -> None:
    names = [f"{stem}{n}" for n in numbers]
    assert sorted(names, key=sysfs.natural_key) == [f"{stem}{n}" for n in sorted(numbers)]


@given(entry_names)
@example("eth0")
@example("eth٣")  # an Arabic-Indic digit: Unicode Nd, which int() reads
def test_natural_key_takes_entry_names_with_decimal_digits(name: str) -> None:
    assume(all(c.isdecimal() or not c.isdigit() for c in name))  # superscripts: see the test below
    assert isinstance(sysfs.natural_key(name), tuple)


@pytest.mark.parametrize("name", ["²", "eth0²", "virtfn1¹"])
def test_natural_key_takes_superscript_digits(name: str) -> None:
    assert sysfs.natural_key(name)


# --- procfs and modprobe.d: the parsers never raise -----------------------------------------------

cmdline_words = st.text(st.sampled_from(string.ascii_letters + string.digits + "._-=/,:"), min_size=1, max_size=16)
netns_values = st.sampled_from(["0", "1", "Y", "N", "y", "n", "on", "off", "true", "false", "t", "f", "junk", ""])


@given(file_text | odd_digits.map(lambda d: f"btime {d}\n") | huge_numbers.map(lambda d: f"x y z net:[{d}] /a\n"))
@example("btime ²\n")
@example("1 2 3:4 net:[" + "9" * 5000 + "] /run/netns/x rw shared:1 - nsfs nsfs rw\n")
def test_procfs_parsers_never_raise(text: str) -> None:
    assert isinstance(procfs.parse_modules(text), frozenset)
    btime = procfs.parse_btime(text)
    assert btime is None or math.isfinite(btime)
    assert isinstance(procfs.parse_nsfs_mounts(text), set)
    version = procfs.parse_ofed_info(text)
    assert version is None or isinstance(version, str)
    assert all(isinstance(m, str) and isinstance(o, str) for m, o in procfs.kcmdline_module_options(text))
    option = procfs.parse_cmdline_netns_mode(text)
    assert option is None or isinstance(option, ModprobeOption)


@given(st.lists(cmdline_words, max_size=6), st.lists(netns_values, min_size=1, max_size=3), st.data())
def test_cmdline_option_last_one_wins(words: list[str], values: list[str], data: st.DataObject) -> None:
    assume(not any(w.startswith(("ib_core.", "ib-core.", "ib_core=", "ib-core=")) for w in words))
    at = 0
    for value in values:  # in order, anywhere among the other words
        at = data.draw(st.integers(at, len(words)))
        words.insert(at, f"ib_core.netns_mode={value}")
        at += 1
    option = procfs.parse_cmdline_netns_mode(" ".join(words))
    assert option is not None and option.raw == values[-1]
    assert option.value is modprobe.netns_mode_of(values[-1])


@given(st.lists(st.integers(1, 2**32 - 1)), st.lists(st.sampled_from(["mnt", "ipc", "uts", "pid"])))
def test_nsfs_mounts_are_found(inodes: list[int], others: list[str]) -> None:
    lines = [f"{i} 25 0:4 net:[{ino}] /run/netns/n{i} rw shared:{i} - nsfs nsfs rw" for i, ino in enumerate(inodes)]
    lines += [f"9{i} 25 0:4 {kind}:[{i}] /run/x rw - nsfs nsfs rw" for i, kind in enumerate(others)]
    assert procfs.parse_nsfs_mounts("\n".join(lines)) == set(inodes)


@given(st.integers(0, 2**40), file_text.filter(lambda t: "btime" not in t))
def test_btime_is_found(btime: int, noise: str) -> None:
    assert procfs.parse_btime(f"cpu 1 2 3\n{noise}\nbtime {btime}\nprocesses 9\n") == float(btime)


@given(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), unique=True))
def test_modules_are_found(names: list[str]) -> None:
    text = "".join(f"{n} 16384 0 - Live 0xffffffffc0000000\n" for n in names)
    assert procfs.parse_modules(text) == frozenset(names)


@given(file_text | st.text(alphabet=" \t\n\\ab#", max_size=80) | st.text(max_size=200))
def test_logical_lines_fast_path_equals_kmods_character_walk(text: str) -> None:
    # Text without a backslash takes the split() path; kmod's character walk is the reference.
    assert list(modprobe.logical_lines(text)) == list(modprobe._wrapped_lines(text))


@given(file_text | st.text(max_size=200))
def test_modprobe_parsers_never_raise(text: str) -> None:
    options = modprobe.parse_conf(text, "/etc/modprobe.d/x.conf")
    assert all(o.source.startswith("/etc/modprobe.d/x.conf:") for o in options)
    assert all(isinstance(o.raw, str) for o in modprobe.netns_mode_options(text, "s"))
    assert isinstance(modprobe.kernel_args(text), list)
    modprobe.resolve_persisted(options)


conf_lines = st.one_of(
    netns_values.map(lambda v: ("set", v)),
    st.sampled_from(
        [
            "# options ib_core netns_mode=0",
            "options mlx5_core num_vfs=4",
            "blacklist rxe",
            "",
            "install ib_core /bin/true",
            "  # indented: not a comment, ignored by kmod",
            "options ib_core",
            "alias rdma ib_core",
        ]
    ).map(lambda line: ("other", line)),
)


@given(st.lists(conf_lines, max_size=12), st.sampled_from(["ib_core", "ib-core"]))
def test_modprobe_conf_settings_in_file_order(lines: list[tuple[str, str]], module: str) -> None:
    text = "".join((f"options {module} netns_mode={v}\n" if kind == "set" else f"{v}\n") for kind, v in lines)
    options = modprobe.parse_conf(text, "/etc/modprobe.d/rdma.conf")
    expected = [(f"/etc/modprobe.d/rdma.conf:{n}", v) for n, (kind, v) in enumerate(lines, 1) if kind == "set"]
    assert [(o.source, o.raw) for o in options] == expected
    assert [o.value for o in options] == [modprobe.netns_mode_of(v) for _, v in expected]


option_values = st.builds(
    ModprobeOption,
    source=st.from_regex(r"/etc/modprobe\.d/[a-z]{1,5}\.conf:[1-9]", fullmatch=True),
    raw=netns_values,
    value=st.sampled_from([NetnsMode.SHARED, NetnsMode.EXCLUSIVE, None]),
)


@given(st.lists(option_values, max_size=8), st.none() | st.floats(0, 2e9))
def test_resolve_persisted_last_valid_wins_and_explains_the_rest(
    options: list[ModprobeOption], mtime: float | None
) -> None:
    persisted, problems = modprobe.resolve_persisted(options, mtime)
    valid = [o for o in options if o.value is not None]
    assert persisted.value is (valid[-1].value if valid else None)
    assert persisted.options == tuple(options)
    assert len(problems) == len(options) - (1 if valid else 0)  # every other setting is explained
    codes = {"modprobe_invalid_value", "modprobe_conflict", "modprobe_duplicate"}
    assert all(p.code in codes and p.subject is not None and "\n" not in p.message for p in problems)
    assert persisted.source_mtime == (mtime if valid else None)


# --- configuration: load_config raises only ConfigError, naming where the value came from ----------

VALID = {
    "host-root": "/host",
    "sys-root": "/host/sys",
    "proc-root": "/host/proc",
    "dev-root": "/host/dev",
    "netns-mode": "exclusive",
    "dry-run": "true",
    "interval": "30s",
    "runtime-retry-interval": "10m",
    "modprobe-file": "/etc/modprobe.d/ib_core.conf",
    "reboot-sentinel": "/var/run/reboot-required",
    "metrics-bind-address": ":9435",
    "health-bind-address": ":9436",
    "kubernetes": "false",
    "kubeconfig": "/etc/kubernetes/kubelet.conf",
    "node-name": "gpu-node-1",
    "label-publisher": "nfd",
    "label-prefix": "rdma.example.com/",
    "label-hysteresis": "60s",
    "nfd-features-file": "/etc/kubernetes/node-feature-discovery/features.d/x",
    "resource-prefixes": "spidernet.io/,rdma/",
    "device-plugin-config": "/k8s-rdma-shared-dev-plugin/config.json",
    "device-plugin-configmap": "kube-system/rdma-devices",
    "device-plugin-configmap-key": "config.json",
    "node-condition": "true",
    "events": "false",
    "node-condition-heartbeat": "30m",
    "link-down-ignore": "mlx5_1/1,ens1f1*",
    "log-level": "debug",
    "log-format": "json",
}

setting_text = st.one_of(
    st.sampled_from(sorted(set(VALID.values()))),
    st.text(max_size=30),
    huge_numbers.map(lambda d: d + "s"),
    st.sampled_from(["", " ", "0", "-1s", "1e9", "inf", "nan", "0.0s", "/a\0b", "[::1]:99999", "::", "/", "Y"]),
)
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def config_sources(draw: st.DrawFn) -> tuple[dict[str, str], dict[str, str], Any]:
    """(flags, environment, config-file content) with any setting given anywhere, valid or not."""
    flags: dict[str, str] = {}
    env: dict[str, str] = {}
    file: dict[Any, Any] = {}
    for key in draw(st.lists(st.sampled_from(sorted(SETTINGS_BY_KEY)), max_size=6)):
        where = draw(st.sampled_from(["flag", "env", "file", "file-yaml"]))
        if where == "flag":
            flags[key] = draw(setting_text.filter(lambda t: "\0" not in t))  # argv cannot hold NUL
        elif where == "env":
            env[SETTINGS_BY_KEY[key].env] = draw(setting_text.filter(lambda t: "\0" not in t))
        else:
            file[key] = draw(setting_text if where == "file" else yaml_values)
    if draw(st.booleans()):
        env["NODE_NAME"] = draw(st.sampled_from(["gpu-7", "Bad_Node!", ""]) | st.text(max_size=8))
    if draw(st.booleans()):
        file[draw(st.text(max_size=8))] = "x"  # unknown keys, odd keys
    content: Any = file if file else draw(st.sampled_from([None, "", "[", "- a\n", b"\xff\xfe", "a: [" * 3000]))
    return flags, env, content


def _write(path: Path, content: Any) -> Path | None:
    if content is None:
        return None
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    else:
        path.write_text(yaml.safe_dump(content, allow_unicode=True))
    return path


def named_a_given_source(setting: str, flags: dict[str, str], env: dict[str, str], file: Path | None) -> bool:
    """Whether a ConfigError's ``setting`` is something the operator actually gave: a flag, an
    environment variable, the config file or one of its keys."""
    given = {SETTINGS_BY_KEY[k].flag for k in flags} | {n for n in env if n.startswith(ENV_PREFIX) or n == "NODE_NAME"}
    if file is not None:
        return setting in given or setting == "--config" or setting.startswith(f"{file}: ")
    return setting in given


@given(sources=config_sources())
@example(sources=({}, {}, b"netns-mode: shared\n\xff\n"))  # not UTF-8
@example(sources=({}, {}, "interval: " + "[" * 5000))  # nested past the recursion limit
@example(sources=({"runtime-retry-interval": "9" * 400}, {}, None))  # 1e400 seconds: infinite
@example(sources=({}, {ENV_PREFIX + "LABEL_HYSTERESIS": "9" * 400 + "h"}, None))
@example(sources=({}, {}, {"host-root": "/host\0/x"}))  # NUL in a path: fails much later, obscurely
@example(sources=({}, {ENV_PREFIX + "CONFIG": "config.yaml"}, None))  # relative config path
@example(sources=({}, {}, {"\n": "x"}))  # an unknown key that would break the message in two
def test_load_config_raises_only_config_error(
    tmp_path_factory: pytest.TempPathFactory, sources: tuple[dict[str, str], dict[str, str], Any]
) -> None:
    flags, env, content = sources
    file = _write(tmp_path_factory.mktemp("config") / "config.yaml", content)
    try:
        config = load_config(flags, env, file)
    except ConfigError as err:
        assert "\n" not in str(err), str(err)
        assert named_a_given_source(err.setting, flags, env, file), err.setting
        return
    assert isinstance(config, Config)
    for seconds in (config.interval_seconds, config.runtime_retry_seconds, config.label_hysteresis_seconds):
        assert math.isfinite(seconds) and seconds > 0
    paths = [
        config.roots.root,
        config.managed_modprobe_file,
        config.features_file,
        config.kubeconfig,
        config.reboot_sentinel,
        config.device_plugin_config,
        config.roots.sys,
        config.roots.proc,
    ]
    assert all(p is None or (p.is_absolute() and "\0" not in str(p)) for p in paths)


def test_node_name_from_the_downward_api_is_named_as_such() -> None:
    with pytest.raises(ConfigError) as info:
        load_config({}, {"NODE_NAME": "Bad_Node!"})
    assert info.value.setting == "NODE_NAME"  # the variable the operator set, not one they never saw


# --- the CLI: every invalid configuration is exit 2 and one line on stderr --------------------------


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])  # capsys is drained per example
@given(sources=config_sources())
def test_cli_exits_2_with_one_line_or_runs(
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    sources: tuple[dict[str, str], dict[str, str], Any],
) -> None:
    flags, env, content = sources
    file = _write(tmp_path_factory.mktemp("cli") / "config.yaml", content)
    try:
        load_config(flags, env, file)
    except ConfigError:
        pass
    else:
        return  # a valid configuration would start an agent against this machine: not here
    argv = ["status", *(["--config", str(file)] if file is not None else [])]
    env = dict(env)
    for key, value in flags.items():
        if not SETTINGS_BY_KEY[key].status:  # not a flag of `status`: the same value, by the environment
            env[SETTINGS_BY_KEY[key].env] = value  # a flag would have won over the environment anyway
        elif key not in ("dry-run", "kubernetes"):
            argv += [f"--{key}={value}"]
    capsys.readouterr()
    code = main(argv, env=env)
    err = capsys.readouterr().err
    if code == 0:  # the invalid setting was a boolean flag we could not pass on the command line
        assert {"dry-run", "kubernetes"} & set(flags)
        return
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("rdma-node-agent: "), err


@pytest.fixture
def kube(tmp_path: Path) -> Any:
    with KubeStandIn() as api:
        api.put_node("gpu-node-1")
        yield api, api.write_kubeconfig(tmp_path / "kubeconfig")


RUN_CASES = [
    # (what, extra argv, env, the setting the message must name)
    ("labels to the Node without a node name", ["--label-publisher", "node"], {}, "--node-name"),
    ("allocatable watch without a node name", ["--label-publisher", "none"], {}, "--node-name"),
    (
        "kubeconfig that does not exist",
        ["--kubeconfig", "/nonexistent/kubeconfig"],
        {"NODE_NAME": "gpu-node-1"},
        "--kubeconfig",
    ),
    ("kubeconfig that is not YAML", ["--kubeconfig", "{bad}"], {"NODE_NAME": "gpu-node-1"}, "--kubeconfig"),
    ("kubeconfig that is a directory", ["--kubeconfig", "{dir}"], {"NODE_NAME": "gpu-node-1"}, "--kubeconfig"),
    (
        "infinite label hysteresis",
        ["--label-hysteresis", "9" * 400, "--no-kubernetes", "--label-publisher", "nfd"],
        {},
        "--label-hysteresis",
    ),
]


@pytest.mark.parametrize(("argv", "env", "named"), [c[1:] for c in RUN_CASES], ids=[c[0] for c in RUN_CASES])
def test_run_refuses_bad_combinations_with_exit_2(
    kube: tuple[KubeStandIn, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
    named: str,
) -> None:
    api, kubeconfig = kube
    bad = tmp_path / "bad.yaml"
    bad.write_text("clusters: [")
    (tmp_path / "dir").mkdir()
    argv = [a.replace("{bad}", str(bad)).replace("{dir}", str(tmp_path / "dir")) for a in argv]
    if "--kubeconfig" not in argv and "--no-kubernetes" not in argv:
        argv += ["--kubeconfig", str(kubeconfig)]
    full = ["run", "--once", "--host-root", str(tmp_path), "--metrics-bind-address", "127.0.0.1:0", *argv]
    assert main(full, env=env) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("rdma-node-agent: ")]
    assert len(lines) == 1 and lines[0].startswith(f"rdma-node-agent: {named}: "), err
    assert "Traceback" not in err
    assert api.count("patch") == 0  # refused before anything was published


# --- the device plugin's config.json: only ConfigError ---------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
SELECTOR_KEYS = st.sampled_from(["vendors", "deviceIDs", "drivers", "ifNames", "linkTypes", "rootDevices", "VENDORS"])
plugin_like = st.fixed_dictionaries(
    {
        "configList": st.lists(
            st.fixed_dictionaries(
                {"resourceName": st.sampled_from(["hca_shared_devices_a", "bad name", 7, ""]) | st.text(max_size=8)},
                optional={
                    "rdmaHcaMax": st.integers(-2, 1000) | json_values,
                    "resourcePrefix": json_values,
                    "selectors": st.dictionaries(
                        SELECTOR_KEYS, st.lists(st.sampled_from(["15b3", "1017", "mlx5_core"])) | json_values
                    ),
                    "devices": json_values,
                },
            ),
            max_size=3,
        )
        | json_values
    },
    optional={"periodicUpdateInterval": st.integers(-5, 100) | json_values},
)


@given(st.one_of(plugin_like.map(json.dumps), json_values.map(json.dumps), st.text(max_size=100)))
def test_device_plugin_config_raises_only_config_error(text: str) -> None:
    try:
        config = parse_device_plugin_config(text, "config.json")
    except ConfigError as err:
        assert err.setting.startswith("config.json") and "\n" not in str(err)
        return
    assert isinstance(config, DevicePluginConfig) and config.resources
    names = [r.resource_name for r in config.resources]
    assert len(set(names)) == len(names) and all(re.fullmatch(r"[A-Za-z0-9_]+", n) for n in names)


@pytest.mark.parametrize(
    "text", ['{"periodicUpdateInterval": ' + "9" * 5000 + "}", "[" * 100_000], ids=["huge-integer", "deep-nesting"]
)
def test_device_plugin_config_pathological_json(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_device_plugin_config(text, "config.json")


# --- label validation never raises and agrees with the API server -------------------------------

label_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n"), max_size=70)
label_keys = st.one_of(
    label_text,
    st.from_regex(
        r"([a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\.){0,3}[a-z]{1,10}/[A-Za-z0-9]([-A-Za-z0-9_.]{0,70})?", fullmatch=True
    ),
)


@given(label_keys, label_text | st.from_regex(r"[A-Za-z0-9][-A-Za-z0-9_.]{0,70}", fullmatch=True))
def test_validate_label_never_raises_and_agrees_with_the_server(key: str, value: str) -> None:
    problem = validate_label(key, value)
    server_ok = not is_qualified_name(key) and not is_valid_label_value(value)
    assert (problem is None) == server_ok, (key, value, problem)
    assert problem is None or "\n" not in problem


@pytest.mark.parametrize(("key", "value"), [("rdma.spidernet.io/\udcff", "true"), ("rdma.spidernet.io/x", "\udcff")])
def test_validate_label_with_surrogates(key: str, value: str) -> None:
    assert validate_label(key, value) is not None


def test_settings_table_is_covered() -> None:
    assert set(VALID) == {s.key for s in SETTINGS}
    assert load_config(dict(VALID), {}) is not None  # the valid examples are valid
