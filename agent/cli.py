"""Command line: ``rdma-node-agent status`` (one-shot report of this node) and ``run`` (the agent).

Every setting is a flag (``--netns-mode``), an environment variable (``RDMA_NODE_AGENT_NETNS_MODE``)
and a config-file key (``netns-mode:``); flags win over the environment, which wins over the file.
``status`` has the flags that matter to a report; the environment and the file still take every
setting (they are shared with ``run``).

Exit codes: 0 the command did its job (a status report is produced whatever it found); 1 an
unexpected failure; 2 bad configuration (one line on stderr naming the setting); 3 ``status
--fail-on-problems``: the report lists problems (all of them, or those of the codes given).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NamedTuple

from prometheus_client import ProcessCollector

from agent import __version__, logs
from agent.config import Config
from agent.errors import ConfigError, PublishError
from agent.loop import Agent, Stage
from agent.publish.exposition import Exposition
from agent.publish.http import MetricsServer
from agent.publish.metrics import RdmaCollector
from agent.publish.status import render_json, render_text
from agent.settings import SETTINGS, load_config
from agent.settingvalues import comma_list

if TYPE_CHECKING:
    from agent.publish.kube.configmap import ConfigMapWatcher
    from agent.publish.kube.events import EventRecorder
    from agent.publish.kube.node_labels import NodeLabelPublisher
    from agent.publish.kube.node_status import ConditionPublisher
    from agent.publish.kube.watch import NodeWatcher
    from agent.publish.plugin_source import PluginConfigSource

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_PROBLEMS = 0, 1, 2, 3
# After SIGTERM: how long the cycle thread and the Node watcher each get to finish. With the
# server's own stop, the process is gone within 2 s whatever a cycle is blocked in.
SHUTDOWN_WAIT_SECONDS = 0.5
FEATURES_LEASE_INTERVALS, FEATURES_LEASE_MIN_SECONDS = 4, 600.0
logger = logging.getLogger("agent")


class _Parser(argparse.ArgumentParser):
    """Errors become ConfigError (exit 2, one line); no abbreviated flags (``--netns`` is not
    ``--netns-mode``: a typo in a DaemonSet must fail, not guess)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ConfigError("command line", message)


def _settings_parser(*, status: bool) -> _Parser:
    """The settings' flags: every one for ``run``, those that matter to a report for ``status``."""
    common = _Parser(add_help=False)
    common.add_argument("--config", type=Path, help="YAML config file (keys: the flag names without --)")
    for setting in SETTINGS:
        if status and not setting.status:
            continue
        if setting.key == "dry-run":
            common.add_argument("--dry-run", dest="dry-run", action="store_const", const="true", help=setting.help)
        elif setting.key == "kubernetes":
            common.add_argument(
                "--no-kubernetes",
                dest="kubernetes",
                action="store_const",
                const="false",
                help="run without the Kubernetes publisher (labels, allocatable watch)",
            )
        else:
            common.add_argument(
                setting.flag,
                dest=setting.key,
                metavar=setting.key.upper().replace("-", "_"),
                help=f"{setting.help} [env {setting.env}]",
            )
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rdma-node-agent", description="Observe, enforce and publish a node's RDMA state.")
    parser.add_argument("--version", action="version", version=f"rdma-node-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    status = sub.add_parser(
        "status", parents=[_settings_parser(status=True)], help="print this node's RDMA state once and exit"
    )
    status.add_argument("--json", action="store_true", help="print the snapshot as JSON (agent/status.schema.json)")
    status.add_argument(
        "--fail-on-problems",
        nargs="?",
        const="",
        default=None,
        metavar="CODES",
        help="exit 3 when the report lists problems: any, or only those of the comma-separated codes given",
    )
    run = sub.add_parser(
        "run", parents=[_settings_parser(status=False)], help="run the agent: reconcile every interval, serve metrics"
    )
    run.add_argument("--once", action="store_true", help="one reconcile, print the status, exit")
    return parser


def config_from(args: argparse.Namespace, env: Mapping[str, str]) -> Config:
    flags = {s.key: getattr(args, s.key) for s in SETTINGS if getattr(args, s.key, None) is not None}
    return load_config(flags, env, args.config)


def _failing_codes(value: str | None) -> frozenset[str] | None:
    """``--fail-on-problems``: None when not given, {} for any problem, else the codes listed."""
    if value is None:
        return None
    return frozenset(comma_list(value))


def _status(config: Config, as_json: bool, fail_on: frozenset[str] | None = None) -> int:
    """One dry-run cycle: snapshot, the plan for the configured mode, and — when the Node can be
    read — its RDMA resources and why they are zero. Never changes the host or the Node. Exit 0,
    or 3 when ``fail_on`` is given and the report lists a problem it names (empty: any)."""
    try:
        publishing = _publish_stages(config, labels=False)
    except ConfigError as err:  # e.g. a kubeconfig but no NODE_NAME: report without Kubernetes
        logger.warning("status without Kubernetes: %s", err)
        publishing = _publish_stages(replace(config, kubernetes=False), labels=False)
    watcher = publishing.watcher
    try:
        if watcher is not None and not watcher.wait_synced(timeout=10):
            logger.warning("the Node was not read within 10 s: allocatable unknown")
        if publishing.configmap is not None and not publishing.configmap.wait_synced(timeout=10):
            logger.warning("ConfigMap %s was not read within 10 s", publishing.configmap.ref)
        state = Agent(replace(config, dry_run=True), stages=publishing.stages).run_once()
    finally:
        for close in publishing.closers:
            close()
    kubernetes = watcher is not None and watcher.observed() is not None
    sys.stdout.write(render_json(state) if as_json else render_text(state, kubernetes=kubernetes))
    if fail_on is None:
        return EXIT_OK
    codes = {p.code for p in state.all_problems}
    return EXIT_PROBLEMS if (codes & fail_on if fail_on else codes) else EXIT_OK


class _Writers(NamedTuple):
    """What writes to the API server for this configuration (None: not wanted, or no Kubernetes)."""

    labels: NodeLabelPublisher | None = None
    condition: ConditionPublisher | None = None
    events: EventRecorder | None = None


def _writers(config: Config, api: Any, watcher: NodeWatcher) -> _Writers:
    from agent.publish.kube.client import node_name
    from agent.publish.kube.events import EventRecorder
    from agent.publish.kube.node_labels import NodeLabelPublisher
    from agent.publish.kube.node_status import ConditionPublisher

    node = config.label_publisher == "node"
    heartbeat = config.node_condition_heartbeat_seconds
    return _Writers(
        labels=NodeLabelPublisher(api, watcher, prefix=config.label_prefix) if node else None,
        condition=ConditionPublisher(api, watcher, heartbeat=heartbeat) if config.node_condition else None,
        events=EventRecorder(api, node_name(config)) if config.events else None,
    )


class _Publishing(NamedTuple):
    """The publishing stages for a configuration, what to stop on exit, and the watchers."""

    stages: list[Stage]
    closers: list[Callable[[], None]]
    watcher: NodeWatcher | None = None
    configmap: ConfigMapWatcher | None = None  # the device plugin's ConfigMap


def _plugin_source(config: Config, api: Any | None) -> tuple[PluginConfigSource | None, ConfigMapWatcher | None]:
    """The device plugin's config: a file when one is configured, else its ConfigMap (through the API,
    so only with Kubernetes), else none."""
    from agent.publish.kube.configmap import ConfigMapWatcher
    from agent.publish.plugin_source import ConfigMapSource, FileSource

    if config.device_plugin_config is not None:
        return FileSource(config.device_plugin_config), None
    if config.device_plugin_configmap is None or api is None:
        return None, None
    namespace, name = config.device_plugin_configmap
    watcher = ConfigMapWatcher(api, namespace, name).start()
    return ConfigMapSource(watcher, config.device_plugin_configmap_key), watcher


def _publish_stages(config: Config, *, labels: bool = True) -> _Publishing:
    """The publishing stages for this configuration, what to stop on exit, the watchers. ``labels``:
    the agent runs (False: ``status``, which reads the Node but writes nothing).

    Without in-cluster config or a kubeconfig the agent runs without Kubernetes (a log line says
    so); ``--no-kubernetes`` skips the attempt. Raises ConfigError (exit 2) for a bad kubeconfig or a
    missing node name."""
    from agent.publish.kube.client import KubernetesUnavailable, load_api_client, node_name
    from agent.publish.kube.watch import NodeWatcher
    from agent.publish.ports import PortsStage
    from agent.publish.stages import AllocatableStage, ConditionStage, EventsStage, LabelsStage

    watcher: NodeWatcher | None = None
    api: Any | None = None
    writers = _Writers()
    closers: list[Callable[[], None]] = []
    if config.kubernetes:
        try:
            api = load_api_client(config.kubeconfig)
        except KubernetesUnavailable as reason:
            logger.warning("running without Kubernetes: %s", reason)
        else:
            started = NodeWatcher(api, node_name(config)).start()
            closers.append(lambda: started.stop(timeout=SHUTDOWN_WAIT_SECONDS))
            watcher = started
            if labels:
                writers = _writers(config, api, watcher)
    source, configmap = _plugin_source(config, api)
    if configmap is not None:
        closers.append(lambda: configmap.stop(timeout=SHUTDOWN_WAIT_SECONDS))
    stages: list[Stage] = [
        PortsStage(config.link_down_ignore),
        AllocatableStage(config.resource_prefixes, source, watcher),
    ]
    features = config.features_file if labels and config.label_publisher == "nfd" else None
    if writers.labels is not None or features is not None:
        stages.append(
            LabelsStage(
                config.label_prefix,
                config.label_hysteresis_seconds,
                node=writers.labels,
                watcher=watcher,
                features_file=features,
                host_root=config.roots.root,
                features_ttl=features_lease(config),
            )
        )
    stages.append(ConditionStage(config.label_hysteresis_seconds, writers.condition))
    if writers.events is not None:
        stages.append(EventsStage(writers.events))
        closers.append(lambda: writers.events.stop(timeout=SHUTDOWN_WAIT_SECONDS) if writers.events else None)
    return _Publishing(stages, closers, watcher, configmap)


def features_lease(config: Config) -> float:
    """How long NFD keeps the agent's labels without a refresh (``# +expiry-time``): four intervals,
    at least 10 minutes. The file is rewritten when less than half is left, so a running agent never
    lets it lapse; an agent that stopped (uninstalled, hung) loses its labels within this time."""
    return max(FEATURES_LEASE_INTERVALS * config.interval_seconds, FEATURES_LEASE_MIN_SECONDS)


class _Signals(NamedTuple):
    stop: threading.Event  # SIGTERM or SIGINT: stop
    wake: threading.Event  # any of them: the cycle thread ends its wait between cycles
    notice: threading.Event  # any of them: the main thread logs what arrived
    received: list[int]  # which arrived


def _install_signal_handlers() -> _Signals:
    """SIGTERM/SIGINT → stop, SIGHUP → reconcile now. Installed before anything slow starts, so a
    SIGTERM during start-up is a clean exit too (not the default action's exit 143). The handler only
    sets events: it runs in the main thread wherever that was, and a log line written from it could
    land inside another write to stderr ("reentrant call") and abort before the events were set."""
    signals = _Signals(threading.Event(), threading.Event(), threading.Event(), [])

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        signals.received.append(signum)
        if signum != signal.SIGHUP:
            signals.stop.set()
        signals.wake.set()
        signals.notice.set()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    return signals


def _run(config: Config, once: bool) -> int:
    signals = _install_signal_handlers()
    stages, closers, *_ = _publish_stages(config)
    try:
        return _serve(config, once, stages, signals)
    finally:
        for close in closers:
            close()


def metrics_exposition(agent: Agent) -> Exposition:
    """What ``/metrics`` serves: the node's metrics change once per cycle, so they are rendered once
    per published state and served from memory; the process collector is rendered per scrape."""
    return Exposition(
        cached=RdmaCollector(agent.state, version=__version__),
        version=agent.state,
        live=ProcessCollector(registry=None),
    )


def _log_signals_until_stop(signals: _Signals) -> None:
    """Wait in the main thread, logging each signal as it arrives, until one says stop."""
    seen = 0
    while True:
        signals.notice.wait()
        signals.notice.clear()
        for signum in signals.received[seen:]:
            done = "reconciling now" if signum == signal.SIGHUP else "stopping"
            logger.info("%s: %s", signal.Signals(signum).name, done)
        seen = len(signals.received)
        if signals.stop.is_set():
            return


def _serve(config: Config, once: bool, stages: list[Stage], signals: _Signals) -> int:
    agent = Agent(config, stages=stages)
    if once:
        sys.stdout.write(render_json(agent.run_once()))
        return EXIT_OK
    server = MetricsServer(
        config.metrics_bind_address,
        metrics_exposition(agent),
        healthy=agent.healthy,
        ready=agent.ready,
        health_bind=config.health_bind_address,
    )
    try:
        server.start()
    except PublishError as err:
        print(f"rdma-node-agent: {err}", file=sys.stderr)
        return EXIT_FAILURE
    logger.info(
        "rdma-node-agent %s: desired netns mode %s, every %ss",
        __version__,
        config.netns_mode.value,
        config.interval_seconds,
    )
    # The cycles run in a thread of their own, so that the main thread is never inside a host read:
    # a SIGTERM ends the process in time even when a cycle is stuck (a read that blocks ignores the
    # signal: the kernel restarts it), and /healthz says so once the cycle passes its deadline.
    cycles = threading.Thread(
        target=agent.run_forever, args=(signals.stop, signals.wake), name="reconcile", daemon=True
    )
    cycles.start()
    _log_signals_until_stop(signals)
    server.stop()
    cycles.join(timeout=SHUTDOWN_WAIT_SECONDS)
    if cycles.is_alive():
        logger.warning("a cycle is still running (a host read or request is blocked): exiting without it")
    return EXIT_OK


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        config = config_from(args, os.environ if env is None else env)
    except ConfigError as err:
        print(f"rdma-node-agent: {err}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(config.log_level, config.log_format)
    if args.command == "status":
        return _status(config, args.json, _failing_codes(args.fail_on_problems))
    try:
        return _run(config, args.once)
    except ConfigError as err:
        print(f"rdma-node-agent: {err}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
