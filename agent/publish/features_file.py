"""The node-feature-discovery publisher: the agent's labels as an NFD ``features.d`` file.

nfd-worker's ``local`` source reads every non-hidden file in
``/etc/kubernetes/node-feature-discovery/features.d/`` (node-feature-discovery source/local/local.go,
docs/usage/customization-guide.md "Feature files"): one ``<key>[=<value>]`` per line (a bare key
means ``true``), ``#`` comments, an optional ``# +expiry-time=<RFC 3339>`` directive after which
the following lines are ignored, files over 64 KiB skipped. Keys carrying a namespace
(``rdma.spidernet.io/ready``) are published as they are; nfd-master then owns the labels, so this
path needs no Node RBAC.

The file is replaced atomically: a hidden temporary file in the same directory (NFD skips
dot-files, so it never reads a half-written one), fsync, rename over the old name, fsync of the
directory. When the content would not change, nothing is written and the mtime stays.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from agent.errors import PublishError
from agent.hostfiles import atomic_write, read_file
from agent.hostio import Refused
from agent.labelsyntax import validate_label
from agent.publish.condition import parse_time, rfc3339

logger = logging.getLogger(__name__)

MAX_FILE_SIZE = 65536  # node-feature-discovery source/local MaxFeatureFileSize
EXPIRY_DIRECTIVE = "# +expiry-time="
HEADER = "# Written by rdma-node-agent: node labels for node-feature-discovery's local source. Do not edit.\n"


def render_features(labels: Mapping[str, str], *, expires_at: float | None = None) -> str:
    """The file's text (pure): header, optional expiry directive, ``key=value`` lines sorted by key.

    Raises PublishError for a label NFD would misread or the API server reject (the labels
    publisher validates first, so this is a programming error) or a file over NFD's size limit."""
    lines = [HEADER]
    if expires_at is not None:
        lines.append(f"{EXPIRY_DIRECTIVE}{rfc3339(expires_at)}\n")
    for key in sorted(labels):
        error = validate_label(key, labels[key])
        if error is not None:
            raise PublishError(f"features file: {error}")
        lines.append(f"{key}={labels[key]}\n")
    text = "".join(lines)
    if len(text.encode()) > MAX_FILE_SIZE:
        raise PublishError(f"features file: {len(text.encode())} bytes exceeds NFD's limit of {MAX_FILE_SIZE}")
    return text


def parse_features(text: str) -> tuple[dict[str, str], float | None]:
    """(labels, the last expiry directive as epoch seconds) as NFD reads a feature file (pure).

    Unlike NFD, expired lines are kept: the writer wants to know what it wrote. A directive NFD
    could not parse counts as no expiry."""
    labels: dict[str, str] = {}
    expiry: float | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(EXPIRY_DIRECTIVE):
            expiry = parse_time(line[len(EXPIRY_DIRECTIVE) :].strip())
            continue
        if line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        labels[key] = value if sep else "true"
    return labels, expiry


def _needs_write(current: str | None, labels: Mapping[str, str], ttl: float | None, now: float) -> bool:
    if current is None:
        return True
    if ttl is None:
        return current != render_features(labels)
    written, expiry = parse_features(current)
    # Renew the lease when less than half of it is left, so a steady node writes about twice per ttl.
    return written != dict(labels) or expiry is None or expiry - now < ttl / 2 or not current.startswith(HEADER)


def write_features(
    path: Path,
    labels: Mapping[str, str],
    *,
    root: Path = Path("/"),
    ttl_seconds: float | None = None,
    now: float | None = None,
) -> bool:
    """Make ``path`` (under the host ``root``) hold ``labels``; True when the file was written, False
    when it already did.

    With ``ttl_seconds`` the file carries ``# +expiry-time=`` now + ttl, so NFD drops the labels if
    the agent stops refreshing them (e.g. it was uninstalled); the lease is renewed once less than
    half of it is left. ``now`` is epoch seconds (default: the clock). The directory is created if
    missing. Raises PublishError (errno kept in ``__cause__``) and leaves the old file intact when
    the write fails or is refused (a symlink, a FIFO, a path leaving the host root)."""
    if ttl_seconds is not None and not ttl_seconds > 0:
        raise ValueError(f"ttl_seconds must be > 0, got {ttl_seconds!r}")
    now = time.time() if now is None else now
    try:
        data = read_file(root, path, limit=MAX_FILE_SIZE + 1)
        current = data.decode() if data is not None else None
    except Refused as err:
        if err.errno != errno.EFBIG:
            raise PublishError(f"will not write {path}: it {err.strerror}") from err
        current = None  # larger than NFD reads: rewrite it
    except UnicodeDecodeError:
        logger.warning("%s is not UTF-8 text, rewriting it", path)
        current = None
    except OSError as err:
        raise PublishError(f"cannot read {path}: {err.strerror or err}") from err
    if not _needs_write(current, labels, ttl_seconds, now):
        return False
    text = render_features(labels, expires_at=None if ttl_seconds is None else now + ttl_seconds)
    try:
        atomic_write(root, path, text.encode())
    except OSError as err:
        verb = "will not write" if isinstance(err, Refused) else "cannot write"
        raise PublishError(f"{verb} {path}: {err.strerror or err}; the old file is intact") from err
    logger.info("wrote %d labels to %s", len(labels), path)
    return True
