#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/raft-elector with the Helm built by hack/helm/build.sh:
#   - `helm lint --strict` of the chart with its defaults, and with every ci/*-values.yaml;
#   - `helm template` of every ci/*-values.yaml scenario (rendered into .cache/helm/rendered for a
#     look), and of the defaults at the oldest Kubernetes version the chart supports;
#   - the parent-chart example in deploy/helm/examples, with the chart as its dependency.
# Any error or lint warning fails the script. It writes nothing outside .cache/helm (Helm's own
# config, cache and data homes included). The deeper checks, against a real kube-apiserver, are
# the Go tests in test/chart.
#
# Environment:
#   HELM_ENV_DIR   where build.sh put Helm (default: <repo>/.cache/helm)
#   HELM           a helm binary to use instead (it must know Kubernetes >= 1.29 as its default)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${HELM_ENV_DIR:-$root/.cache/helm}"
chart="$root/deploy/helm/raft-elector"
example="$root/deploy/helm/examples/parent-chart"
# The oldest Kubernetes release the chart's kubeVersion admits (Chart.yaml).
min_kube_version=1.29.0

if [ -z "${HELM:-}" ]; then
	"$root/hack/helm/build.sh"
	HELM="$out/bin/helm"
fi

work="$out/check"
rm -rf "$work"
mkdir -p "$work/home" "$work/rendered"
# Keep Helm's repository config, cache and plugins inside .cache.
export HELM_CONFIG_HOME="$work/home/config" HELM_CACHE_HOME="$work/home/cache" HELM_DATA_HOME="$work/home/data" \
	KUBECACHEDIR="$work/home/kube-cache"
# Never talk to a cluster: lint and template work offline.
export KUBECONFIG=/dev/null

failed=0
run() {
	local what="$1"
	shift
	local log="$work/last.log"
	if "$@" >"$log" 2>&1; then
		echo "ok    $what"
	else
		echo "FAIL  $what: $*"
		sed 's/^/      /' "$log"
		failed=1
	fi
}

run "lint (defaults)" "$HELM" lint --strict "$chart"
run "template (defaults, Kubernetes $min_kube_version)" \
	"$HELM" template check "$chart" --namespace check --kube-version "$min_kube_version" --output-dir "$work/rendered/min-kube"

scenarios=("$chart"/ci/*-values.yaml)
if [ ! -e "${scenarios[0]}" ]; then
	echo "FAIL  no scenarios in $chart/ci"
	exit 1
fi
for values in "${scenarios[@]}"; do
	name="$(basename "$values" -values.yaml)"
	run "lint $name" "$HELM" lint --strict -f "$values" "$chart"
	run "template $name" "$HELM" template check "$chart" --namespace check -f "$values" --output-dir "$work/rendered/$name"
done

# The example parent chart, with this chart as its dependency (what `helm dependency build`
# would unpack into charts/), in a copy so the source tree stays clean.
cp -R "$example" "$work/parent-chart"
rm -rf "$work/parent-chart/charts"
mkdir -p "$work/parent-chart/charts"
cp -R "$chart" "$work/parent-chart/charts/raft-elector"
run "lint example parent-chart" "$HELM" lint --strict "$work/parent-chart"
run "template example parent-chart" "$HELM" template check "$work/parent-chart" --namespace check --output-dir "$work/rendered/parent-chart"

if [ "$failed" != 0 ]; then
	echo "hack/helm/check.sh: the chart has errors (above)" >&2
	exit 1
fi
echo "hack/helm/check.sh: chart ok (${#scenarios[@]} scenarios; rendered into ${work#"$root"/}/rendered)"
