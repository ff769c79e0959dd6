"""Diagnose: who consumes the node's RDMA devices, what the Node says they got, and why it is zero.

Two consumers matter (Spiderpool's RDMA guide): the **RDMA shared device plugin**
(Mellanox/k8s-rdma-shared-dev-plugin; Macvlan/IPVLAN, e.g. ``spidernet.io/hca_shared_devices``),
which needs netns mode *shared*, and **SR-IOV VFs with RDMA CNI** (sriov-network-device-plugin,
e.g. ``spidernet.io/mellanoxrdma``), which needs *exclusive*.

Analysis of a NodeSnapshot against those consumers; nothing here publishes. The allocatable stage
(agent/publish/stages.py) puts the results in the AgentState (resources, selector matches,
problems), where status and metrics read them:

* :mod:`agent.diagnose.plugin_config`: the shared plugin's ``config.json``, parsed and validated as
  the plugin does;
* :mod:`agent.diagnose.selection`: the node as the plugin sees it, and its selectors against it;
* :mod:`agent.diagnose.quantity`: the Node's extended resources (Kubernetes quantities);
* :mod:`agent.diagnose.diagnosis`: which consumer a resource has, whether the node suits it, and why
  its allocatable is zero.

Everything here is pure except the two readers of a config file in :mod:`agent.diagnose.plugin_config`.
"""
