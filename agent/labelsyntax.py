"""Kubernetes label syntax, checked the way the API server checks it, for config and publishers alike.

The rules of k8s.io/apimachinery (pkg/util/validation: ``IsQualifiedName``, ``IsValidLabelValue``,
``IsDNS1123Subdomain``), plus the namespaces Kubernetes reserves for itself. It sits below
:mod:`agent.config` so start-up validation of ``--label-prefix`` and the label publishers apply one
rule: a prefix the config accepts is one every label under it can be published with.
"""

from __future__ import annotations

import re

DEFAULT_LABEL_PREFIX = "rdma.spidernet.io/"  # --label-prefix's default

# k8s.io/apimachinery pkg/api/validate/content: kube.go, dns.go
# Go's regexp anchors "^…$" match the whole string, as re.fullmatch does; lengths are in bytes.
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")  # labelKeyFmt
_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(_DNS1123_LABEL + r"(\." + _DNS1123_LABEL + r")*")
LABEL_NAME_MAX = 63
LABEL_VALUE_MAX = 63
DNS1123_SUBDOMAIN_MAX = 253

# Namespaces Kubernetes reserves for itself; NFD accepts only its own two inside them
# (node-feature-discovery pkg/apis/nfd/validate Label()).
_RESERVED_SUFFIXES = ("kubernetes.io", "k8s.io")
_NFD_NAMESPACES = ("feature.node.kubernetes.io", "profile.node.kubernetes.io")


def _length(text: str) -> int:
    # surrogatepass: names read from the filesystem may carry lone surrogates (undecodable bytes)
    return len(text.encode("utf-8", "surrogatepass"))


def qualified_name_error(key: str) -> str | None:
    """Why ``key`` is not a Kubernetes qualified name (label or annotation key), or None."""
    parts = key.split("/")
    if len(parts) > 2:
        return "a qualified name has at most one '/' (an optional DNS subdomain prefix, then a name)"
    if len(parts) == 2:
        prefix, name = parts
        if not prefix:
            return "prefix part must be non-empty"
        if _length(prefix) > DNS1123_SUBDOMAIN_MAX:
            return f"prefix part must be no more than {DNS1123_SUBDOMAIN_MAX} bytes"
        if not _DNS1123_SUBDOMAIN.fullmatch(prefix):
            return "prefix part must be a lowercase RFC 1123 subdomain (e.g. example.com)"
    else:
        name = parts[0]
    if not name:
        return "name part must be non-empty"
    if _length(name) > LABEL_NAME_MAX:
        return f"name part must be no more than {LABEL_NAME_MAX} bytes"
    if not _LABEL_NAME.fullmatch(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return None


def label_value_error(value: str) -> str | None:
    """Why ``value`` is not a valid label value (empty is valid), or None."""
    if _length(value) > LABEL_VALUE_MAX:
        return f"must be no more than {LABEL_VALUE_MAX} bytes"
    if value and not _LABEL_NAME.fullmatch(value):
        return (
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return None


def validate_label(key: str, value: str) -> str | None:
    """The reason the API server would reject label ``key=value``, or None when it is valid."""
    error = qualified_name_error(key)
    if error is not None:
        return f"invalid key {key!r}: {error}"
    error = label_value_error(value)
    if error is not None:
        return f"invalid value {value!r} for {key}: {error}"
    return None


def label_prefix_error(prefix: str) -> str | None:
    """Why ``prefix`` (``rdma.spidernet.io/``) cannot prefix the agent's labels, or None.

    A prefix is a lowercase DNS subdomain of at most 253 bytes followed by ``/``. Namespaces
    Kubernetes reserves (``kubernetes.io``, ``k8s.io`` and their subdomains) are refused, except
    NFD's ``feature.node.kubernetes.io`` and ``profile.node.kubernetes.io`` (and their subdomains),
    which node-feature-discovery accepts."""
    if not prefix.endswith("/") or prefix.count("/") != 1:
        return f"must be a DNS subdomain followed by '/', like {DEFAULT_LABEL_PREFIX}, got {prefix!r}"
    domain = prefix[:-1]
    error = qualified_name_error(f"{domain}/x")
    if error is not None:
        return f"{prefix!r}: {error}"
    reserved = any(domain == s or domain.endswith("." + s) for s in _RESERVED_SUFFIXES)
    nfd = any(domain == n or domain.endswith("." + n) for n in _NFD_NAMESPACES)
    if reserved and not nfd:
        return f"{prefix!r} is in a namespace Kubernetes reserves (kubernetes.io, k8s.io)"
    return None
