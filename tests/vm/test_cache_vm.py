"""Real-kernel check of the sysfs cache: in a QEMU guest running Debian's kernel with an igb SR-IOV NIC
and Soft-RoCE, the kernel behaves as SysfsCache assumes (relative links ending in the target's name,
new inode numbers for re-created entries, d_ino equal to st_ino, ibdev and parent following renames)
and warm snapshots equal cold ones after every change. One boot runs tests/vm/guest_cache.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.vm
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def guest(guest_json: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    return guest_json("guest_cache.py", igb=True)


def test_warm_snapshots_equal_cold_ones_after_every_change(guest: dict[str, Any]) -> None:
    checks = guest["checks"]
    assert [c["label"] for c in checks if not c["equal"]] == [], [c["diff"] for c in checks if not c["equal"]]
    assert len(checks) == 10
    by_label = {c["label"]: c for c in checks}
    assert "rxe7" in by_label["rxe1 renamed rxe7"]["devices"]
    pf = guest["facts"]["pf_address"]
    assert len(by_label["sriov_numvfs 1"]["functions"][pf][2]) == 1  # the changes did happen
    assert [d for f in by_label["VF0 unbound"]["functions"].values() for d in f[:1]].count(None) == 1


def test_links_are_relative_and_end_in_the_target_name(guest: dict[str, Any]) -> None:
    facts = guest["facts"]
    assert facts["netdev_device_link"] == f"../../../{facts['pf_address']}"  # one readlink names the function
    assert facts["class_link"] == "../../devices/virtual/infiniband/rxe0"
    assert facts["virtfn_link"].startswith("../") and not facts["virtfn_link"].endswith("/")


def test_recreated_entries_have_new_inode_numbers(guest: dict[str, Any]) -> None:
    facts = guest["facts"]
    for key in ("rxe0_inodes", "vf0_inodes"):
        before, after = facts[key]
        assert before != after, key
    assert all(facts["d_ino_is_st_ino"].values()), facts["d_ino_is_st_ino"]


def test_names_printed_by_other_objects_follow_renames(guest: dict[str, Any]) -> None:
    # Why a char device's ibdev is dropped when class/infiniband changes, and rxe's parent is read
    # each cycle: the same entry prints a new name after a rename.
    facts = guest["facts"]
    _name, before, after, ibdev = facts["renamed_uverbs"]
    assert (before == after, ibdev) == (True, "rxe7")
    assert facts["rxe0_parent_after_rename"] == "pfren"
    assert facts["moved_away_listed"] is False
    assert facts["unbound_driver_link"] is False
