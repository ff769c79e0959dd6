"""Where the agent's ``ApiClient`` comes from: in-cluster config, else a kubeconfig (explicit path,
``$KUBECONFIG`` or ``~/.kube/config``); :class:`KubernetesUnavailable` when there is neither, which the
loop turns into "running without Kubernetes". Also the node name the agent publishes for."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from agent import __version__
from agent.config import Config
from agent.errors import ConfigError, PublishError
from agent.hostio import kind_of
from agent.publish.kube.failures import one_line

# One logger for the whole package, so that log lines keep naming agent.publish.kube.
logger = logging.getLogger(__package__)

USER_AGENT = f"rdma-node-agent/{__version__}"

# The client's config loaders are untyped.
_load_kube_config = cast(Any, config.load_kube_config)
_InClusterConfigLoader = cast(Any, InClusterConfigLoader)


# What loading a kubeconfig raises on a missing, unreadable or malformed file (the loader indexes into
# whatever YAML it got, so a list where a mapping belongs is a TypeError).
KUBECONFIG_ERRORS = (ConfigException, OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError)


class KubernetesUnavailable(PublishError):  # noqa: N818 - a condition the loop handles, not a failure
    """Neither in-cluster configuration nor a kubeconfig was found: run without Kubernetes."""


def node_name(cfg: Config) -> str:
    """This node's name (``NODE_NAME`` from the downward API); required when publishing to Kubernetes."""
    if not cfg.node_name:
        raise ConfigError(
            "--node-name",
            "required when publishing to Kubernetes: set NODE_NAME from the downward API "
            "(env valueFrom fieldRef spec.nodeName) or pass --no-kubernetes",
        )
    return cfg.node_name


def load_api_client(kubeconfig: Path | None = None, *, env: Mapping[str, str] = os.environ) -> Any:
    """A ``kubernetes.client.ApiClient`` for this agent, without touching the client's global default.

    An explicit ``kubeconfig`` wins (an unreadable one is a :class:`ConfigError`); otherwise in-cluster
    configuration (service-account token, refreshed as it rotates); otherwise ``$KUBECONFIG`` or
    ``~/.kube/config``; otherwise :class:`KubernetesUnavailable`. urllib3's own retries are off: the
    watcher and the publisher back off and resync themselves, and each request is counted once."""
    configuration = client.Configuration()
    if kubeconfig is not None:
        _refuse_unless_regular(kubeconfig)
        try:
            _load_kube_config(config_file=str(kubeconfig), client_configuration=configuration, persist_config=False)
        except KUBECONFIG_ERRORS as err:
            raise ConfigError("--kubeconfig", f"cannot use {kubeconfig}: {one_line(err)}") from err
        source = str(kubeconfig)
    else:
        try:
            loader = _InClusterConfigLoader(SERVICE_TOKEN_FILENAME, SERVICE_CERT_FILENAME, environ=env)
            loader.load_and_set(configuration)
            source = "in-cluster service account"
        except (ConfigException, OSError) as in_cluster:
            default = env.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
            try:
                _load_kube_config(config_file=default, client_configuration=configuration, persist_config=False)
            except KUBECONFIG_ERRORS as err:
                raise KubernetesUnavailable(
                    f"no in-cluster config ({one_line(in_cluster)}) and no usable kubeconfig at {default} "
                    f"({one_line(err)})"
                ) from err
            source = default
    configuration.retries = False
    api_client = client.ApiClient(configuration=configuration)
    api_client.user_agent = USER_AGENT
    logger.info("Kubernetes API %s (credentials from %s)", configuration.host, source)
    return api_client


def _refuse_unless_regular(path: Path) -> None:
    """The client opens the kubeconfig with a plain open(): a FIFO there would hang the start."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return  # missing or unreadable: the loader says so
    if not stat.S_ISREG(mode):
        raise ConfigError("--kubeconfig", f"{path} is {kind_of(mode)}, not a regular file")
