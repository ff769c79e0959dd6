"""Where the host is, and what the operator asked for.

This is the only module that spells host paths such as ``/sys`` or ``/etc``: everything else asks a
:class:`HostRoots` for them, so the agent reads the right tree whether it runs on the host (root
``/``) or in a pod with the host mounted at ``/host``, and tests can point it at a fixture tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError

# modprobe(8)/modprobe.d(5) configuration directories, in kmod's precedence order: a file name in an
# earlier directory hides the same name in later ones (kmod libkmod.c ``default_config_paths``).
MODPROBE_DIRS: tuple[str, ...] = (
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "usr/lib/modprobe.d",
    "lib/modprobe.d",
)


@dataclass(frozen=True, kw_only=True, slots=True)
class HostRoots:
    """Mount points of the host's trees. ``root`` is the host's ``/``; each tree can be overridden."""

    root: Path = Path("/")
    sys: Path | None = None
    proc: Path | None = None
    dev: Path | None = None

    def __post_init__(self) -> None:
        for name in ("root", "sys", "proc", "dev"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_absolute():
                raise ConfigError(
                    f"--{name.replace('root', 'host-root')}", f"must be an absolute path, got {value!s}"
                )

    @property
    def sysfs(self) -> Path:
        return self.sys if self.sys is not None else self.root / "sys"

    @property
    def procfs(self) -> Path:
        return self.proc if self.proc is not None else self.root / "proc"

    @property
    def devfs(self) -> Path:
        return self.dev if self.dev is not None else self.root / "dev"

    def host(self, relative: str) -> Path:
        """A path on the host given relative to its ``/`` (e.g. ``etc/modprobe.d``)."""
        return self.root / relative.lstrip("/")

    def modprobe_dirs(self) -> tuple[Path, ...]:
        return tuple(self.host(d) for d in MODPROBE_DIRS)

    def display(self, path: Path) -> str:
        """How a path looks from the host's point of view, for reports (``/host/etc/x`` → ``/etc/x``)."""
        for base, shown in (
            (self.sysfs, "/sys"),
            (self.procfs, "/proc"),
            (self.devfs, "/dev"),
            (self.root, "/"),
        ):
            try:
                rel = path.relative_to(base)
            except ValueError:
                continue
            return str(Path(shown) / rel)
        return str(path)
