"""The netns-mode planner: table of (live, persisted, desired, netns count, prerequisites, memory) →
actions and reported state; the managed modprobe.d file's content; version prerequisites."""

from __future__ import annotations

import errno
from dataclasses import replace

import pytest

from agent.model import (
    ActionKind,
    DesiredMode,
    EnforcementState,
    KernelInfo,
    ModprobeOption,
    NetnsMode,
    NodeSnapshot,
    PersistedNetnsMode,
)
from agent.reconcile.plan import (
    MANAGED_HEADER,
    EnforcerMemory,
    PlanInput,
    exclusive_supported,
    managed_file_content,
    plan,
)

SH, EX = NetnsMode.SHARED, NetnsMode.EXCLUSIVE
FILE = "/etc/modprobe.d/ib_core.conf"
W, S, SIG, CLR = (
    ActionKind.WRITE_PERSISTED,
    ActionKind.SET_RUNTIME_MODE,
    ActionKind.SIGNAL_REBOOT,
    ActionKind.CLEAR_REBOOT,
)
BOOT = 1_700_000_000.0


def snap(
    live: NetnsMode | None,
    persisted: NetnsMode | None = None,
    *,
    netns: int = 0,
    release: str = "6.1.0-56-amd64",
    mofed: str | None = None,
    source: str | None = None,
    mtime: float | None = None,
) -> NodeSnapshot:
    option = (
        ModprobeOption(source=source or f"{FILE}:3", raw=str(persisted.kernel_value), value=persisted)
        if persisted
        else None
    )
    return NodeSnapshot(
        taken_at=BOOT + 100,
        netlink_available=live is not None,
        netns_mode=live,
        netns_mode_source="netlink" if live else None,
        kernel=KernelInfo(release=release, mofed_version=mofed, boot_time=BOOT),
        persisted=PersistedNetnsMode(
            value=persisted,
            source=option.source if option else None,
            options=(option,) if option else (),
            source_mtime=mtime,
        ),
        network_namespaces=netns,
    )


def file_for(mode: NetnsMode | None) -> str | None:
    return None if mode is None else managed_file_content(None, mode)


def run(
    s: NodeSnapshot,
    desired: DesiredMode,
    text: str | None,
    memory: EnforcerMemory | None = None,
    now: float = BOOT + 100,
) -> EnforcementState:
    return plan(
        PlanInput(
            snapshot=s,
            desired=desired,
            managed_file_text=text,
            managed_file_display=FILE,
            memory=memory or EnforcerMemory(),
            now=now,
        )
    )


BUSY = EnforcerMemory(runtime_attempts=1, last_attempt=BOOT + 50, last_errno=errno.EBUSY, next_attempt=BOOT + 650)


@pytest.mark.parametrize(
    ("live", "file_mode", "desired", "netns", "memory", "now", "actions", "compliant", "reboot"),
    [
        # unmanaged never acts, whatever the state
        (SH, None, DesiredMode.UNMANAGED, 0, None, 0, [], True, False),
        (EX, SH, DesiredMode.UNMANAGED, 5, None, 0, [], True, False),
        # switched to unmanaged while a reboot was signalled: take the sentinel back, nothing else
        (SH, EX, DesiredMode.UNMANAGED, 1, replace(BUSY, reboot_signalled=True), 0, [CLR], True, False),
        # converged: nothing to do, zero writes
        (SH, SH, DesiredMode.SHARED, 3, None, 0, [], True, False),
        (EX, EX, DesiredMode.EXCLUSIVE, 3, None, 0, [], True, False),
        # first reconcile towards exclusive: persist, then switch at runtime
        (SH, None, DesiredMode.EXCLUSIVE, 0, None, 0, [W, S], False, False),
        (SH, SH, DesiredMode.EXCLUSIVE, 2, None, 0, [W, S], False, False),
        # live already right, file missing: persist only
        (EX, None, DesiredMode.EXCLUSIVE, 0, None, 0, [W], True, False),
        # EBUSY remembered, inside the backoff window: no SYS_SET, reboot signalled
        (SH, EX, DesiredMode.EXCLUSIVE, 1, BUSY, BOOT + 100, [SIG], False, True),
        # EBUSY remembered, window over: one more SYS_SET
        (SH, EX, DesiredMode.EXCLUSIVE, 1, BUSY, BOOT + 650, [S, SIG], False, True),
        # converged after a reboot was signalled: clear it
        (
            EX,
            EX,
            DesiredMode.EXCLUSIVE,
            0,
            replace(BUSY, reboot_signalled=True, last_errno=None),
            0,
            [CLR],
            True,
            False,
        ),
        # back to shared
        (EX, EX, DesiredMode.SHARED, 0, None, 0, [W, S], False, False),
        # no RDMA at all (ib_core not loaded): persist for the next load, nothing at runtime
        (None, None, DesiredMode.EXCLUSIVE, 0, None, 0, [W], True, False),
    ],
)
def test_plan_table(
    live: NetnsMode | None,
    file_mode: NetnsMode | None,
    desired: DesiredMode,
    netns: int,
    memory: EnforcerMemory | None,
    now: float,
    actions: list[ActionKind],
    compliant: bool,
    reboot: bool,
) -> None:
    state = run(snap(live, file_mode, netns=netns), desired, file_for(file_mode), memory, now or BOOT + 100)
    assert [a.kind for a in state.plan] == actions
    assert (state.compliant, state.reboot_required) == (compliant, reboot)
    target = desired.netns_mode
    assert all(a.mode == target for a in state.plan if a.kind is not CLR or target is not None)


def test_busy_reports_namespace_count_and_next_attempt() -> None:
    state = run(snap(SH, EX, netns=7), DesiredMode.EXCLUSIVE, file_for(EX), BUSY, BOOT + 100)
    (problem,) = state.problems
    assert problem.code == "netns_mode_busy" and "7 non-init network namespaces" in problem.message
    assert state.next_runtime_attempt == BOOT + 650
    assert state.reboot_reason is not None and "next boot" in state.reboot_reason


@pytest.mark.parametrize(
    ("code", "problem"),
    [
        (errno.EPERM, "netns_mode_eperm"),
        (errno.EPROTONOSUPPORT, "netns_mode_no_netlink"),
        (errno.EINVAL, "netns_mode_set_failed"),
    ],
)
def test_other_refusals_are_their_own_problems_and_no_reboot(code: int, problem: str) -> None:
    memory = replace(BUSY, last_errno=code)
    state = run(snap(SH, EX), DesiredMode.EXCLUSIVE, file_for(EX), memory, BOOT + 100)
    assert [p.code for p in state.problems] == [problem]
    assert not state.reboot_required and [a.kind for a in state.plan] == []


@pytest.mark.parametrize(
    ("release", "mofed", "supported"),
    [
        ("5.2.0-1-amd64", None, False),
        ("5.3.0", None, True),
        ("4.18.0-553.el8_10.x86_64", "MLNX_OFED_LINUX-4.7-3.2.9.0", True),
        ("4.18.0-553.el8_10.x86_64", "4.6-1.0.1.1", False),
        ("6.12.95+deb12-amd64", None, True),
        (None, None, None),
        ("garbage", None, None),
    ],
)
def test_exclusive_prerequisites(release: str | None, mofed: str | None, supported: bool | None) -> None:
    assert exclusive_supported(release, mofed) is supported


def test_unsupported_kernel_does_not_try() -> None:
    state = run(snap(SH, release="4.19.0-27-amd64"), DesiredMode.EXCLUSIVE, None)
    assert state.plan == () and [p.code for p in state.problems] == ["exclusive_unsupported"]
    assert "kernel ≥ 5.3 or MOFED ≥ 4.7" in state.problems[0].message


def test_persisted_ineffective_when_file_predates_boot() -> None:
    stale = snap(SH, EX, mtime=BOOT - 3600)
    state = run(stale, DesiredMode.UNMANAGED, None)
    assert state.persisted_ineffective
    assert "update-initramfs -u" in state.problems[0].message and "dracut -f" in state.problems[0].message
    fresh = snap(SH, EX, mtime=BOOT + 10)  # written after boot: a reboot will apply it, not ignored
    assert not run(fresh, DesiredMode.UNMANAGED, None).persisted_ineffective


def test_other_file_overriding_the_managed_one_is_reported() -> None:
    s = snap(SH, SH, source="/etc/modprobe.d/zz-mlnx.conf:1")
    state = run(s, DesiredMode.EXCLUSIVE, file_for(EX))
    assert "persisted_overridden" in [p.code for p in state.problems]
    assert "/etc/modprobe.d/zz-mlnx.conf:1" in state.problems[0].message


# --- the managed file --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "expected_body"),
    [
        (None, ""),
        ("", ""),
        # the seed's `echo >> file` run three times: duplicates collapse into one line
        ("options ib_core netns_mode=0\noptions ib_core netns_mode=0\noptions ib_core netns_mode=0\n", ""),
        # other lines kept byte for byte, including comments, blank lines and other modules
        ("# site policy\n\noptions mlx5_core prof_sel=2\n", "# site policy\n\noptions mlx5_core prof_sel=2\n"),
        # other parameters on an ib_core line survive; only netns_mode leaves it
        ("options ib_core netns_mode=1 recv_queue_size=512\n", "options ib_core recv_queue_size=512\n"),
        ("options ib-core netns-mode=Y\n", ""),
        # no trailing newline on the last line
        ("blacklist foo", "blacklist foo\n"),
    ],
)
def test_managed_file_content(current: str | None, expected_body: str) -> None:
    for mode in (SH, EX):
        text = managed_file_content(current, mode)
        assert text == MANAGED_HEADER + expected_body + f"options ib_core netns_mode={mode.kernel_value}\n"
        assert managed_file_content(text, mode) == text  # idempotent: no rewrite next time
        assert [line for line in text.splitlines() if "netns_mode=" in line and not line.startswith("#")] == [
            f"options ib_core netns_mode={mode.kernel_value}"
        ]


def test_managed_file_header_is_not_duplicated_and_user_lines_keep_position() -> None:
    first = managed_file_content("install foo /bin/true\n", EX)
    switched = managed_file_content(first, SH)
    assert switched.count(MANAGED_HEADER) == 1
    assert switched == MANAGED_HEADER + "install foo /bin/true\noptions ib_core netns_mode=1\n"


def test_dry_run_predicts_reboot_from_namespaces() -> None:
    s = snap(SH, EX, netns=4)
    given = PlanInput(
        snapshot=s,
        desired=DesiredMode.EXCLUSIVE,
        managed_file_text=file_for(EX),
        managed_file_display=FILE,
        memory=EnforcerMemory(),
        now=BOOT,
        dry_run=True,
    )
    state = plan(given)
    assert state.reboot_required and state.reboot_reason is not None
    assert "will refuse" in state.reboot_reason and "(4 now)" in state.reboot_reason
    assert not plan(replace(given, dry_run=False)).reboot_required  # a real run tries first: the kernel decides
    assert not plan(replace(given, snapshot=snap(SH, EX, netns=0))).reboot_required
