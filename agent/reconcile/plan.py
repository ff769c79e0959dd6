"""Plan: snapshot + desired mode + what the enforcer remembers → actions and the state to publish.

Pure functions only. The kernel rules this encodes (drivers/infiniband/core/device.c,
``rdma_compatdev_set``): SYS_SET to the current mode always succeeds; to the other mode it fails
with EBUSY while any non-init network namespace exists (every pod has one), in either direction.
So the agent persists ``options ib_core netns_mode=N`` first, tries the runtime switch, and on EBUSY
reports *reboot required* and retries only once per backoff window — never in a loop.
"""

from __future__ import annotations

import errno
import re
from dataclasses import dataclass, replace

from agent.model import (
    Action,
    ActionKind,
    DesiredMode,
    EnforcementState,
    NetnsMode,
    NodeSnapshot,
    Problem,
)

MANAGED_HEADER = (
    "# Managed by rdma-node-agent: the ib_core netns_mode option in this file is rewritten to match\n"
    "# the agent's configured netns mode (0 = exclusive, 1 = shared). Other lines are kept as they are.\n"
)
_OPTIONS = re.compile(r"^\s*options\s+ib[-_]core\b(?P<params>.*)$")
_NETNS_PARAM = re.compile(r"(?:^|\s)netns[-_]mode=\S*")

MIN_KERNEL_FOR_EXCLUSIVE = (5, 3)
MIN_MOFED_FOR_EXCLUSIVE = (4, 7)


@dataclass(frozen=True, kw_only=True, slots=True)
class EnforcerMemory:
    """What carries over between reconciles (held by the loop, updated only by the enforcer)."""

    runtime_attempts: int = 0
    last_attempt: float | None = None
    last_errno: int | None = None  # of the last SYS_SET; None after a success
    next_attempt: float | None = None  # no SYS_SET before this time (backoff after a refusal)
    reboot_signalled: bool = False  # the sentinel exists / a reboot was asked for


@dataclass(frozen=True, kw_only=True, slots=True)
class PlanInput:
    snapshot: NodeSnapshot
    desired: DesiredMode
    managed_file_text: str | None  # current content of the managed modprobe.d file (None: absent)
    managed_file_display: str  # its host path, as modprobe options name it ("/etc/modprobe.d/ib_core.conf")
    memory: EnforcerMemory
    now: float
    dry_run: bool = False
    managed_file_error: str | None = None  # why the managed file cannot be used: then it is never written


def _version(text: str | None, pattern: str) -> tuple[int, int] | None:
    match = re.search(pattern, text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def kernel_version(release: str | None) -> tuple[int, int] | None:
    """``6.1.0-56-amd64`` → (6, 1)."""
    return _version(release, r"^(\d+)\.(\d+)")


def mofed_version(text: str | None) -> tuple[int, int] | None:
    """``MLNX_OFED_LINUX-5.8-1.0.1.1`` or ``5.8-1.0.1`` → (5, 8)."""
    return _version(text, r"(\d+)\.(\d+)")


def exclusive_supported(release: str | None, mofed: str | None) -> bool | None:
    """Exclusive mode needs kernel ≥ 5.3 or MOFED ≥ 4.7 (the seed's prerequisite). None: unknown."""
    kernel = kernel_version(release)
    ofed = mofed_version(mofed)
    if (kernel is not None and kernel >= MIN_KERNEL_FOR_EXCLUSIVE) or (
        ofed is not None and ofed >= MIN_MOFED_FOR_EXCLUSIVE
    ):
        return True
    if kernel is None and ofed is None:
        return None
    return False


def managed_file_content(current: str | None, mode: NetnsMode) -> str:
    """The managed file with exactly one ``options ib_core netns_mode=N`` line, last.

    Every other line is kept byte for byte; ``netns_mode`` parameters are removed from other
    ``options ib_core`` lines (the line is dropped when nothing else is left on it); the header
    comment is added once. Idempotent: applying it to its own output changes nothing."""
    kept: list[str] = []
    for line in (current or "").splitlines(keepends=True):
        match = _OPTIONS.match(line.rstrip("\n"))
        if match and _NETNS_PARAM.search(match.group("params")):
            rest = _NETNS_PARAM.sub("", match.group("params")).strip()
            if rest:
                kept.append(f"options ib_core {rest}\n")
            continue
        kept.append(line)
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"
    body = "".join(kept)
    if MANAGED_HEADER not in body:
        body = MANAGED_HEADER + body
    return body + f"options ib_core netns_mode={mode.kernel_value}\n"


def _errno_problem(code: int, target: NetnsMode, namespaces: int | None) -> Problem:
    if code == errno.EBUSY:
        count = "some" if namespaces is None else str(namespaces)
        return Problem(
            code="netns_mode_busy",
            message=(
                f"the kernel refused to switch to {target.value} mode at runtime (EBUSY): {count} non-init "
                "network namespaces exist (every pod has one); the persisted setting applies at the next boot"
            ),
        )
    if code == errno.EPERM:
        return Problem(
            code="netns_mode_eperm",
            message="the agent may not change the RDMA netns mode (EPERM): it needs CAP_NET_ADMIN in the "
            "host's initial user namespace (hostNetwork pod, not user-namespaced)",
        )
    if code == errno.EPROTONOSUPPORT:
        return Problem(
            code="netns_mode_no_netlink",
            message="cannot set the RDMA netns mode: no RDMA netlink (ib_core is not loaded)",
        )
    return Problem(
        code="netns_mode_set_failed",
        message=f"setting the RDMA netns mode failed: {errno.errorcode.get(code, code)}",
    )


def _ineffective(snapshot: NodeSnapshot) -> Problem | None:
    """Persisted ≠ live although the file predates this boot: ib_core was loaded without it."""
    persisted, live = snapshot.persisted.value, snapshot.netns_mode
    mtime, boot = snapshot.persisted.source_mtime, snapshot.kernel.boot_time
    if persisted is None or live is None or persisted == live or mtime is None or boot is None or mtime >= boot:
        return None
    return Problem(
        code="persisted_ineffective",
        message=(
            f"netns_mode={persisted.kernel_value} ({persisted.value}) is persisted in {snapshot.persisted.source} "
            f"since before this boot, yet the live mode is {live.value}: ib_core was loaded without it, usually "
            "from an initramfs built before the change — run `update-initramfs -u` (Debian/Ubuntu) or "
            f"`dracut -f` (RHEL) and reboot, or add ib_core.netns_mode={persisted.kernel_value} to the kernel "
            "command line"
        ),
        subject=snapshot.persisted.source,
    )


@dataclass(frozen=True, kw_only=True, slots=True)
class _Runtime:
    """What the live mode asks for: a SYS_SET when due, a reboot signal when the kernel refuses."""

    actions: tuple[Action, ...] = ()
    problems: tuple[Problem, ...] = ()
    reboot_required: bool = False
    reason: str | None = None
    code: str | None = None  # the reason as a stable code (a problem code's vocabulary)
    next_attempt: float | None = None


def plan(given: PlanInput) -> EnforcementState:
    """The actions to take now and the state to report. ``state.plan`` holds the actions."""
    snap = given.snapshot
    live = snap.netns_mode
    ineffective = _ineffective(snap)
    problems = [ineffective] if ineffective is not None else []
    target = given.desired.netns_mode
    base = EnforcementState(
        desired=given.desired,
        live=live,
        persisted=snap.persisted.value,
        compliant=target is None or live is None or live == target,
        persisted_ineffective=ineffective is not None,
        runtime_set_attempts=given.memory.runtime_attempts,
        dry_run=given.dry_run,
    )
    if target is None:  # unmanaged: observe only — but take back a reboot request the agent made
        clear = (Action(kind=ActionKind.CLEAR_REBOOT, reason="the netns mode is unmanaged now"),)
        return replace(base, plan=clear if given.memory.reboot_signalled else (), problems=tuple(problems))
    unsupported = _exclusive_unsupported(snap, target)
    if unsupported is not None:
        return replace(base, problems=(*problems, unsupported))
    persist, persist_problems = _persist(given, target)
    runtime = _runtime(given, target)
    return replace(
        base,
        reboot_required=runtime.reboot_required,
        reboot_reason=runtime.reason,
        reboot_reason_code=runtime.code,
        next_runtime_attempt=runtime.next_attempt,
        plan=(*persist, *runtime.actions),
        problems=(*problems, *persist_problems, *runtime.problems),
    )


def _exclusive_unsupported(snap: NodeSnapshot, target: NetnsMode) -> Problem | None:
    """Exclusive mode on a kernel and OFED known too old for it: nothing is changed."""
    kernel = snap.kernel
    if target is not NetnsMode.EXCLUSIVE or exclusive_supported(kernel.release, kernel.mofed_version) is not False:
        return None
    mofed = f" and MOFED {kernel.mofed_version}" if kernel.mofed_version else ""
    return Problem(
        code="exclusive_unsupported",
        message=f"exclusive RDMA netns mode needs kernel ≥ 5.3 or MOFED ≥ 4.7; this node runs kernel "
        f"{kernel.release}{mofed}: not changing anything",
    )


def _persist(given: PlanInput, target: NetnsMode) -> tuple[tuple[Action, ...], tuple[Problem, ...]]:
    """The managed file's write, if its content is not right yet, and what keeps the persisted mode
    from being the target: a file the agent cannot use, another setting that wins over it."""
    wanted_file = managed_file_content(given.managed_file_text, target)
    shown = given.managed_file_display
    if given.managed_file_error is not None:
        message = f"{given.managed_file_error}; the agent does not rewrite a file it cannot read: fix or remove it"
        return (), (Problem(code="persist_failed", message=message, subject=shown),)
    if wanted_file != given.managed_file_text:
        reason = f"persist options ib_core netns_mode={target.kernel_value} in {shown}"
        return (Action(kind=ActionKind.WRITE_PERSISTED, mode=target, reason=reason),), ()
    winner = given.snapshot.persisted
    if winner.value is None or winner.value == target or winner.source is None or winner.source.startswith(shown + ":"):
        return (), ()
    return (), (
        Problem(
            code="persisted_overridden",
            message=(
                f"{winner.source} sets ib_core netns_mode={winner.value.kernel_value} ({winner.value.value}) "
                f"and wins over {shown}; remove it or the node boots in {winner.value.value} mode"
            ),
            subject=winner.source,
        ),
    )


def _runtime(given: PlanInput, target: NetnsMode) -> _Runtime:
    """The live mode against the target: switch it (at most once per backoff window), and when the
    kernel refuses — or, in a dry run, would refuse — signal that a reboot is required."""
    snap, memory = given.snapshot, given.memory
    live = snap.netns_mode
    if live is None or live == target:
        if not memory.reboot_signalled:
            return _Runtime()
        clear = Action(kind=ActionKind.CLEAR_REBOOT, mode=target, reason=f"live mode is {target.value}")
        return _Runtime(actions=(clear,))
    actions: list[Action] = []
    next_attempt = None
    if memory.next_attempt is None or given.now >= memory.next_attempt:
        actions.append(
            Action(
                kind=ActionKind.SET_RUNTIME_MODE,
                mode=target,
                reason=f"live mode is {live.value}, desired {target.value}",
            )
        )
    else:
        next_attempt = memory.next_attempt
    refused = memory.last_errno
    problems = (_errno_problem(refused, target, snap.network_namespaces),) if refused is not None else ()
    busy = memory.last_errno == errno.EBUSY
    # A dry run (``status``) has no memory of refusals: predict one from the kernel's rule.
    predicted = given.dry_run and memory.last_errno is None and (snap.network_namespaces or 0) > 0
    if not (busy or predicted):
        return _Runtime(actions=tuple(actions), problems=problems, next_attempt=next_attempt)
    reason = (
        f"live netns mode is {live.value}, desired {target.value}; the kernel "
        + ("refuses" if busy else "will refuse")
        + f" runtime changes while other network namespaces exist ({snap.network_namespaces} now), so "
        f"netns_mode={target.kernel_value} applies at the next boot"
    )
    actions.append(Action(kind=ActionKind.SIGNAL_REBOOT, mode=target, reason=reason))
    return _Runtime(
        actions=tuple(actions),
        problems=problems,
        reboot_required=True,
        reason=reason,
        code="netns_mode_busy" if busy else "netns_mode_busy_predicted",
        next_attempt=next_attempt,
    )
