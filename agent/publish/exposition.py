"""What ``/metrics`` answers: content negotiation and the render cache.

The agent can produce exactly four representations: the text format 0.0.4 or OpenMetrics 1.0.0,
each plain or gzipped. :func:`negotiate` maps a client's ``Accept`` and ``Accept-Encoding`` onto one
of them, and nothing a client sends ever becomes a cache key, a content type or anything kept: the
cache holds at most those four, whatever the headers say (a client-chosen ``version=`` once made
every distinct header a new cache entry, and memory grew without bound).

The node's metrics change once per reconcile cycle, so they are rendered (and gzipped) once per
published state and every scrape until the next cycle reuses those bytes; only a small live part
(the process collector) is rendered per scrape. Bodies are handed out as a tuple of byte strings
(:meth:`Exposition.parts`) so that serving a scrape copies nothing: the large cached part is the same
object for every scrape.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector, CollectorRegistry

from agent.errors import PublishError

TEXT_0_0_4: Final = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_1_0_0: Final = "application/openmetrics-text; version=1.0.0; charset=utf-8"
GZIP_LEVEL: Final = 6
OPENMETRICS_EOF: Final = b"# EOF\n"
_MAX_MEDIA_RANGES: Final = 64  # an Accept header lists a handful; the rest is ignored


@dataclass(frozen=True, slots=True)
class Representation:
    """One of the four bodies the agent can produce."""

    openmetrics: bool
    gzip: bool

    @property
    def content_type(self) -> str:
        return OPENMETRICS_1_0_0 if self.openmetrics else TEXT_0_0_4


def _params(parts: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        name, sep, value = part.partition("=")
        if sep:
            out[name.strip().lower()] = value.strip().strip('"')
    return out


def _quality(params: dict[str, str]) -> float:
    try:
        q = float(params.get("q", "1"))
    except ValueError:
        return 0.0
    return q if 0.0 <= q <= 1.0 else 0.0


def wants_openmetrics(accept: str) -> bool:
    """Whether ``accept`` prefers OpenMetrics 1.x to the text format (by ``q``; on a tie OpenMetrics,
    as Prometheus lists it first). Versions other than 1.x, and ranges with ``q=0``, do not count;
    anything unparseable means text, which every Prometheus understands."""
    best_om, best_text = 0.0, 0.0
    for item in accept.split(",")[:_MAX_MEDIA_RANGES]:
        media, *rest = item.split(";")
        media = media.strip().lower()
        params = _params(rest)
        q = _quality(params)
        version = params.get("version", "")
        if media == "application/openmetrics-text" and (not version or version.startswith("1.")):
            best_om = max(best_om, q)
        elif media in ("text/plain", "text/*", "*/*"):
            best_text = max(best_text, q)
    return best_om > 0 and best_om >= best_text


def wants_gzip(accept_encoding: str) -> bool:
    """Whether ``Accept-Encoding`` accepts gzip (RFC 9110 §12.5.3): ``gzip`` (or ``x-gzip``) with a
    ``q`` above 0; ``gzip;q=0`` refuses it."""
    for item in accept_encoding.split(",")[:_MAX_MEDIA_RANGES]:
        coding, *rest = item.split(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            return _quality(_params(rest)) > 0
    return False


def negotiate(accept: str, accept_encoding: str) -> Representation:
    return Representation(openmetrics=wants_openmetrics(accept), gzip=wants_gzip(accept_encoding))


def _encoder(openmetrics_format: bool) -> Callable[[CollectorRegistry], bytes]:
    return openmetrics.generate_latest if openmetrics_format else generate_latest


def _registry(collector: Collector) -> CollectorRegistry:
    if isinstance(collector, CollectorRegistry):
        return collector
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


@dataclass(frozen=True, slots=True)
class _Rendered:
    """One state's cached part in one format: the text, and once a gzip scrape asked for it, the
    compressed text sync-flushed, with the compressor to continue the stream from there."""

    version: object
    text: bytes
    gzip_prefix: bytes | None = None
    compressor: zlib._Compress | None = None


class Exposition:
    """``/metrics`` bodies: ``cached`` rendered once per ``version()`` (the loop's published state,
    compared by identity), ``live`` rendered on every scrape and appended.

    A gzip answer is one standard member: the cached part's compressed bytes, kept sync-flushed with
    the compressor that made them, and a copy of that compressor (``zlib`` ``copy()``) to deflate
    the live part and close the member, so no scrape re-compresses the cached bytes. The cache holds
    at most one entry per format (text, OpenMetrics): two, whatever clients send.
    """

    def __init__(
        self,
        *,
        cached: Collector | None = None,
        version: Callable[[], object] | None = None,
        live: Collector | None = None,
    ) -> None:
        if (cached is None) != (version is None):
            raise ValueError("Exposition: cached and version go together")
        self._cached = _registry(cached) if cached is not None else None
        self._version = version
        self._live = _registry(live) if live is not None else None
        self._locks = {False: threading.Lock(), True: threading.Lock()}  # one render at a time per format
        self._rendered: dict[bool, _Rendered] = {}  # by format: OpenMetrics or not
        self.renders = 0  # renders of the cached part (tests and benchmarks read it)

    def cache_entries(self) -> int:
        """How many rendered bodies are kept (at most two)."""
        return len(self._rendered)

    def fresh(self, chosen: Representation) -> bool:
        """Whether ``chosen`` can be answered from the cache (rendered for the current state): then a
        scrape costs only the small live part. Without a cached part every scrape is a render."""
        return self._current(chosen) is not None

    def _current(self, chosen: Representation) -> _Rendered | None:
        """The cached part of ``chosen``'s format when it was rendered for the current state (a dict
        read is atomic and parts are immutable: no lock)."""
        if self._cached is None or self._version is None:
            return None
        part = self._rendered.get(chosen.openmetrics)
        return part if part is not None and part.version is self._version() else None

    def render(self, accept: str, accept_encoding: str) -> tuple[bytes, str, bool]:
        """(body, content type, gzipped?) for one scrape's ``Accept`` and ``Accept-Encoding``."""
        chosen = negotiate(accept, accept_encoding)
        return b"".join(self.parts(chosen)), chosen.content_type, chosen.gzip

    def parts(self, chosen: Representation) -> tuple[bytes, ...]:
        """The body for ``chosen`` as byte strings to send in order (the cached part is shared)."""
        live = _encoder(chosen.openmetrics)(self._live) if self._live is not None else b""
        if chosen.openmetrics and self._live is not None:
            if not live.endswith(OPENMETRICS_EOF):
                raise PublishError("OpenMetrics output does not end with # EOF")
        elif chosen.openmetrics:
            live = OPENMETRICS_EOF
        if self._cached is None:
            return (gzip.compress(live, compresslevel=GZIP_LEVEL) if chosen.gzip else live,)
        part = self._part(chosen)
        if not chosen.gzip:
            return part.text, live
        assert part.gzip_prefix is not None and part.compressor is not None
        stream = part.compressor.copy()
        return part.gzip_prefix, stream.compress(live) + stream.flush()

    def _part(self, chosen: Representation) -> _Rendered:
        assert self._cached is not None and self._version is not None
        part = self._current(chosen)
        if part is not None and (not chosen.gzip or part.compressor is not None):
            return part  # cached: no lock, so a render of the other format never holds this one up
        version = self._version()
        with self._locks[chosen.openmetrics]:
            part = self._rendered.get(chosen.openmetrics)
            if part is None or part.version is not version:
                text = _encoder(chosen.openmetrics)(self._cached)
                self.renders += 1
                if chosen.openmetrics:
                    if not text.endswith(OPENMETRICS_EOF):
                        raise PublishError("OpenMetrics output does not end with # EOF")
                    text = text[: -len(OPENMETRICS_EOF)]
                part = _Rendered(version=version, text=text)
                self._rendered[chosen.openmetrics] = part
            if chosen.gzip and part.compressor is None:
                compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # a gzip member
                prefix = compressor.compress(part.text) + compressor.flush(zlib.Z_SYNC_FLUSH)
                part = _Rendered(version=version, text=part.text, gzip_prefix=prefix, compressor=compressor)
                self._rendered[chosen.openmetrics] = part
            return part
