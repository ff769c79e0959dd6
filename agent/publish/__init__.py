"""Publish: status report, Prometheus metrics, node labels."""
