"""Configuration: flag > environment > file precedence, host-path resolution under the host root,
and the bad-configuration matrix (every invalid setting → exit 2, one line naming the setting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import Config, HostRoots
from agent.errors import ConfigError
from agent.model import DesiredMode
from agent.settings import SETTINGS, load_config
from agent.settingvalues import parse_bind_address, parse_duration


def test_defaults_observe_only() -> None:
    config = load_config({}, env={})
    assert config == Config()
    assert config.netns_mode is DesiredMode.UNMANAGED  # installing the agent never changes a node
    assert config.managed_modprobe_file == Path("/etc/modprobe.d/ib_core.conf")
    assert config.reboot_sentinel is None and config.runtime_retry_seconds >= 600


def test_precedence_flag_env_file(tmp_path: Path) -> None:
    file = tmp_path / "config.yaml"
    file.write_text("netns-mode: shared\ninterval: 45s\nlabel-prefix: example.com/\n")
    env = {"RDMA_NODE_AGENT_NETNS_MODE": "exclusive", "RDMA_NODE_AGENT_INTERVAL": "20s"}
    config = load_config({"interval": "5m"}, env=env, config_file=file)
    assert config.netns_mode is DesiredMode.EXCLUSIVE  # env over file
    assert config.interval_seconds == 300  # flag over env
    assert config.label_prefix == "example.com/"  # file over default


def test_host_paths_resolve_under_host_root() -> None:
    config = load_config(
        {"host-root": "/host", "modprobe-file": "/etc/modprobe.d/rdma.conf", "reboot-sentinel": "/var/run/rna-reboot"},
        env={"NODE_NAME": "gpu-7"},
    )
    assert config.roots == HostRoots(root=Path("/host"))
    assert config.managed_modprobe_file == Path("/host/etc/modprobe.d/rdma.conf")
    assert config.reboot_sentinel == Path("/host/var/run/rna-reboot")
    assert config.node_name == "gpu-7"
    assert config.roots.display(config.managed_modprobe_file) == "/etc/modprobe.d/rdma.conf"


@pytest.mark.parametrize(
    ("text", "seconds"), [("30", 30.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("250ms", 0.25)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "bind"), [(":9435", ("", 9435)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9435", ("::1", 9435))]
)
def test_bind_addresses(text: str, bind: tuple[str, int]) -> None:
    assert parse_bind_address(text) == bind


BAD = {
    "host-root": "relative/path",
    "sys-root": "sys",
    "proc-root": "proc",
    "dev-root": "dev",
    "netns-mode": "exclusiv",
    "dry-run": "maybe",
    "interval": "-5s",
    "runtime-retry-interval": "soon",
    "modprobe-file": "ib_core.conf",
    "reboot-sentinel": "reboot",
    "metrics-bind-address": "9435",
    "health-bind-address": "9436",
    "kubernetes": "perhaps",
    "kubeconfig": "~/.kube/config",
    "node-name": "Bad_Node!",
    "label-publisher": "configmap",
    "label-prefix": "no-slash",
    "label-hysteresis": "0s",
    "nfd-features-file": "features",
    "resource-prefixes": " , ",
    "device-plugin-config": "config.json",
    "device-plugin-configmap": "kube-system/Bad_Name",
    "device-plugin-configmap-key": "config json",
    "node-condition": "sometimes",
    "events": "many",
    "node-condition-heartbeat": "10s",
    "link-down-ignore": "mlx5 0/1",
    "log-level": "verbose",
    "log-format": "xml",
}


def test_every_setting_has_a_bad_value_case() -> None:
    assert set(BAD) == {s.key for s in SETTINGS}


BOOLEAN_FLAGS = ("dry-run", "kubernetes")  # --dry-run / --no-kubernetes take no value: env and file only


@pytest.mark.parametrize(
    ("key", "source"),
    [(k, s) for k in sorted(BAD) for s in ("flag", "env", "file") if not (s == "flag" and k in BOOLEAN_FLAGS)],
)
def test_bad_setting_exits_2_naming_it(
    key: str, source: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setting = next(s for s in SETTINGS if s.key == key)
    argv, env = ["status" if setting.status else "run"], {}  # `status` has the flags that matter to it
    if source == "flag":
        argv += [f"{setting.flag}={BAD[key]}"]
        named = setting.flag
    elif source == "env":
        env[setting.env] = BAD[key]
        named = setting.env
    else:
        file = tmp_path / "c.yaml"
        file.write_text(f"{key}: {BAD[key]!r}\n")
        argv += ["--config", str(file)]
        named = f"{file}: {key}"
    assert main(argv, env=env) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"rdma-node-agent: {named}: ")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("netns-mode: [", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("netns_mode: shared\n", "unknown setting"),
    ],
)
def test_bad_config_file(tmp_path: Path, content: str, message: str) -> None:
    file = tmp_path / "c.yaml"
    file.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_config({}, env={}, config_file=file)


def test_missing_config_file_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "nope.yaml")], env={}) == 2
    assert "--config: cannot read" in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--netns", "shared"], env={}) == 2
    assert "unrecognized arguments: --netns" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("kubernetes.io/", "namespace Kubernetes reserves"),
        ("node-role.kubernetes.io/", "namespace Kubernetes reserves"),
        ("x.k8s.io/", "namespace Kubernetes reserves"),
        ("Rdma.io/", "lowercase RFC 1123 subdomain"),
        ("a.b/c/", "followed by '/'"),
    ],
)
def test_label_prefix_is_checked_at_start_up_by_the_publishers_rule(
    prefix: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # One rule for start-up and publishing: a reserved namespace is refused before anything runs,
    # not discovered as rejected labels at the first PATCH.
    assert main(["run", f"--label-prefix={prefix}"], env={}) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("rdma-node-agent: --label-prefix: ") and message in err


@pytest.mark.parametrize("prefix", ["rdma.spidernet.io/", "feature.node.kubernetes.io/", "example.com/"])
def test_label_prefix_accepted(prefix: str) -> None:
    assert load_config({"label-prefix": prefix}, env={}).label_prefix == prefix
