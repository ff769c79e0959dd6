"""Publish: the status report, Prometheus metrics and their HTTP listeners, node labels (on the Node
or NFD's features file), the ``RDMAReady`` Node condition and Events. docs/architecture.md maps it."""
