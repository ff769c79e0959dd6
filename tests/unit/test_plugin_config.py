"""The RDMA shared device plugin's config.json, parsed and validated as the plugin does
(agent/diagnose/plugin_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.diagnose.plugin_config import (
    ResourceConfig,
    Selectors,
    parse_device_plugin_config,
    read_device_plugin_config,
)
from agent.errors import ConfigError
from tests.deviceplugin_fixtures import FIXTURES, config


@pytest.mark.parametrize(
    ("fixture", "resources", "interval", "ignored"),
    [
        (
            "spiderpool-default.json",
            (
                ResourceConfig(
                    resource_name="hca_shared_devices",
                    resource_prefix="spidernet.io",
                    rdma_hca_max=500,
                    selectors=Selectors(vendors=("15b3",), device_ids=("1017",)),
                ),
            ),
            300,
            (),
        ),
        (
            "mellanox-readme.json",
            (
                ResourceConfig(
                    resource_name="hca_shared_devices_a",
                    resource_prefix="example_prefix",
                    rdma_hca_max=1000,
                    selectors=Selectors(if_names=("ib0", "ib1")),  # the deprecated "devices"
                    from_devices=True,
                ),
                ResourceConfig(
                    resource_name="hca_shared_devices_b",
                    resource_prefix="rdma",  # the plugin's default
                    rdma_hca_max=500,
                    selectors=Selectors(vendors=("15b3",), device_ids=("1017",), if_names=("ib3", "ib4")),
                ),
            ),
            300,
            (),
        ),
        (
            "all-selectors.json",
            (
                ResourceConfig(
                    resource_name="hca_shared_devices_a",
                    resource_prefix="spidernet.io",
                    rdma_hca_max=1000,
                    selectors=Selectors(
                        vendors=("15b3",),
                        device_ids=("1017",),
                        drivers=("mlx5_core",),
                        if_names=("ens1f0np0",),
                        link_types=("ether",),
                    ),
                ),
            ),
            300,
            (),
        ),
        (
            "sriov-selectors.json",
            (
                ResourceConfig(
                    resource_name="hca_shared_devices",
                    resource_prefix="spidernet.io",
                    rdma_hca_max=500,
                    selectors=Selectors(vendors=("15b3",)),
                ),
            ),
            None,  # unset: the plugin's default (60 s)
            ("configList[0].isRdma", "configList[0].selectors.rootDevices", "configList[0].selectors.isRdma"),
        ),
    ],
)
def test_parse_fixture(
    fixture: str, resources: tuple[ResourceConfig, ...], interval: int | None, ignored: tuple[str, ...]
) -> None:
    parsed = config(fixture)
    assert parsed.resources == resources
    assert parsed.periodic_update_interval == interval
    assert parsed.ignored_fields == ignored
    assert parsed.source == str(FIXTURES / fixture)


def test_keys_match_case_insensitively_like_go() -> None:
    text = '{"ConfigList": [{"ResourceName": "a", "rdmahcamax": 7, "Selectors": {"VENDORS": ["15b3"]}}]}'
    parsed = parse_device_plugin_config(text, "config.json")
    assert parsed.resources == (
        ResourceConfig(resource_name="a", rdma_hca_max=7, selectors=Selectors(vendors=("15b3",))),
    )
    assert parsed.resources[0].full_name == "rdma/a"


def _entry(**fields: str) -> str:
    base = {"resourceName": '"hca"', "rdmaHcaMax": "1", "selectors": '{"vendors": ["15b3"]}'}
    base.update(fields)
    body = ", ".join(f'"{k}": {v}' for k, v in base.items() if v != "OMIT")
    return '{"configList": [{' + body + "}]}"


@pytest.mark.parametrize(
    ("text", "setting", "message"),
    [
        (
            "{not json",
            "config.json",
            "not valid JSON: Expecting property name enclosed in double quotes at line 1",
        ),
        ("[]", "config.json", "must be a JSON object, got list"),
        ("{}", "config.json: configList", "no resources configured (the plugin exits)"),
        ('{"configList": []}', "config.json: configList", "no resources configured"),
        ('{"configList": {}}', "config.json: configList", "must be a list"),
        ('{"configList": [1]}', "config.json: configList[0]", "must be a JSON object, got 1"),
        ('{"periodicUpdateInterval": -1, "configList": [{}]}', "config.json: periodicUpdateInterval", "≥ 0"),
        ('{"periodicUpdateInterval": "300"}', "config.json: periodicUpdateInterval", 'integer, got "300"'),
        (
            _entry(resourceName='"hca-shared"'),
            "config.json: configList[0].resourceName",
            "letters, digits and '_'",
        ),
        (_entry(resourceName="OMIT"), "config.json: configList[0].resourceName", "got null"),
        (_entry(rdmaHcaMax="1.5"), "config.json: configList[0].rdmaHcaMax", "must be an integer, got 1.5"),
        (_entry(rdmaHcaMax="1000.0"), "config.json: configList[0].rdmaHcaMax", "must be an integer"),
        (_entry(rdmaHcaMax="true"), "config.json: configList[0].rdmaHcaMax", "must be an integer, got true"),
        (_entry(rdmaHcaMax="-1"), "config.json: configList[0].rdmaHcaMax", "must be ≥ 0, got -1"),
        (_entry(resourcePrefix="5"), "config.json: configList[0].resourcePrefix", "must be a string"),
        (_entry(selectors="OMIT"), "config.json: configList[0]", "neither selectors nor devices"),
        (_entry(selectors="{}"), "config.json: configList[0]", "neither selectors nor devices"),
        (_entry(devices='["ib0"]'), "config.json: configList[0]", "selectors and devices are both given"),
        (_entry(selectors="[]"), "config.json: configList[0].selectors", "must be a JSON object"),
        (
            _entry(selectors='{"vendors": "15b3"}'),
            "config.json: configList[0].selectors.vendors",
            "list of strings",
        ),
        (
            _entry(selectors='{"deviceIDs": [4119]}'),
            "config.json: configList[0].selectors.deviceIDs",
            "list of str",
        ),
        (
            '{"configList": [{"resourceName": "a", "rdmaHcaMax": 1, "devices": ["ib0"]},'
            ' {"resourceName": "a", "resourcePrefix": "x", "rdmaHcaMax": 1, "devices": ["ib1"]}]}',
            "config.json: configList[1].resourceName",
            "'a' is not unique",
        ),
    ],
)
def test_parse_errors_name_the_field(text: str, setting: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_device_plugin_config(text, "config.json")
    assert info.value.setting == setting
    assert message in str(info.value)


def test_read_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        read_device_plugin_config(tmp_path / "config.json")
    assert info.value.setting == "--device-plugin-config"
    assert f"cannot read {tmp_path}/config.json: No such file or directory" in str(info.value)
