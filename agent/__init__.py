"""rdma-node-agent: observe, enforce and publish the RDMA state of a Kubernetes node."""

__version__ = "0.1.0"
