#!/usr/bin/env python3
"""Checks the promises of helm/poz-fleet on manifests `helm template`
rendered (deploy/test-chart.sh runs it for every values file).

    check_chart.py --namespace NS --values values.yaml [--values more.yaml]
                   [--ha] MANIFESTS.yaml

The values files are the ones the manifests were rendered with, chart
defaults first; they say who carries the identities that are not fleet
components (networkPolicy.peers). Everything else is read from the
manifests themselves: the [allow] tables from the rendered TOML files, and
which pod may reach which port by evaluating the rendered NetworkPolicies
as Kubernetes does (a pod selected by no policy of a direction is open in
that direction; rules of all policies that select it add up).

Needs PyYAML; TOML is read with the standard library (Python 3.11+).
Prints each failed promise and exits 1 if any failed.
"""
import argparse
import sys
import tomllib

import yaml

# The services' own defaults (docs/OPERATIONS.md, "Service identities and
# mTLS"): what applies when no [allow] is rendered (tls.enabled false).
DEFAULT_ALLOW = {
    "store": {
        "poz.v1.StoreRead": ["poz-query-gw", "poz-submit-gw", "poz-provider-api", "poz-operator"],
        "poz.v1.StoreWrite": ["poz-provider-api", "poz-submit-gw"],
        "poz.v1.StoreWrite/SetMirrors": ["poz-operator"],
    },
    "verifier": {"poz.v1.Verifier": ["poz-provider-api", "poz-submit-gw"]},
    "signer": {
        "poz.v1.Signer": ["poz-provider-api", "poz-submit-gw", "poz-ceremony"],
        "poz.v1.Signer/SignCertificate": ["poz-provider-api"],
    },
    "provider-api": {
        "poz.v1.ProviderApi": ["poz-account-system", "poz-operator", "poz-submit-gw"],
        "poz.v1.ProviderApi/ListBindingRequests": ["poz-account-system", "poz-operator"],
        "poz.v1.ProviderApi/DecideBindingRequest": ["poz-account-system", "poz-operator"],
        "poz.v1.ProviderApi/IssueCertificate": ["poz-operator"],
    },
}
GRPC_PORT = {"store": 50051, "verifier": 50052, "signer": 50053, "provider-api": 50054}
GATEWAY_PORTS = {"query-gw": [7074, 7075], "submit-gw": [7076]}
METRICS_PORT = 9090
HOOK_KINDS = ("Job",)

failures = []


def fail(msg):
    failures.append(msg)


def deep_merge(base, over):
    """Helm's value merge: maps merge, anything else replaces; null deletes."""
    out = dict(base)
    for k, v in (over or {}).items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def selector_matches(sel, labels):
    """A LabelSelector (matchLabels, matchExpressions In/NotIn/Exists/
    DoesNotExist) against labels; {} matches everything."""
    if sel is None:
        return True
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in sel.get("matchExpressions") or []:
        k, op, vals = e["key"], e["operator"], e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


class Pod:
    """Where traffic comes from or goes to: labels, its namespace's labels."""

    def __init__(self, name, labels, ns, ns_labels, fleet):
        self.name, self.labels, self.ns, self.ns_labels, self.fleet = (
            name, labels, ns, ns_labels, fleet)
        self.identities = set()

    def __repr__(self):
        return self.name


def peer_matches(peer, pod, policy_ns):
    if "ipBlock" in peer:
        # Pod addresses are not known here; an address block may hold
        # them, so it counts as reaching every pod (the safe reading for
        # "no one else can").
        return True
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], pod.ns_labels):
            return False
    elif pod.ns != policy_ns:
        return False
    return selector_matches(peer.get("podSelector"), pod.labels)


def port_matches(ports, port):
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == "TCP" and p.get("port") == port for p in ports)


def allowed(policies, src, dst, port):
    """Whether src may open a TCP connection to dst:port."""
    def direction(pod, kind):
        return [p for p in policies
                if p["ns"] == pod.ns and kind in p["spec"].get("policyTypes", ["Ingress"])
                and selector_matches(p["spec"].get("podSelector"), pod.labels)]

    ingress = direction(dst, "Ingress")
    if ingress:
        ok = False
        for p in ingress:
            for rule in p["spec"].get("ingress") or []:
                if port_matches(rule.get("ports"), port) and (
                        not rule.get("from") or any(peer_matches(f, src, p["ns"]) for f in rule["from"])):
                    ok = True
        if not ok:
            return False
    egress = direction(src, "Egress")
    if egress:
        ok = False
        for p in egress:
            for rule in p["spec"].get("egress") or []:
                if port_matches(rule.get("ports"), port) and (
                        not rule.get("to") or any(peer_matches(t, dst, p["ns"]) for t in rule["to"])):
                    ok = True
        if not ok:
            return False
    return True


def pod_spec_of(doc):
    if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
        return doc["spec"]["template"]
    return None


def check_security(doc):
    name = f'{doc["kind"]}/{doc["metadata"]["name"]}'
    tmpl = pod_spec_of(doc)
    spec = tmpl["spec"]
    psc = spec.get("securityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        fail(f"{name}: pod securityContext must set runAsNonRoot and runAsUser 65532")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        fail(f"{name}: pod seccompProfile must be RuntimeDefault")
    for c in (spec.get("initContainers") or []) + spec["containers"]:
        cn = f'{name} container {c["name"]}'
        sc = c.get("securityContext") or {}
        if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is not True:
            fail(f"{cn}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) in (None, 0):
            fail(f"{cn}: runs as root")
        if sc.get("readOnlyRootFilesystem") is not True:
            fail(f"{cn}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{cn}: allowPrivilegeEscalation must be false")
        if sc.get("privileged"):
            fail(f"{cn}: privileged")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            fail(f"{cn}: capabilities must drop ALL")
        if (sc.get("capabilities") or {}).get("add"):
            fail(f"{cn}: adds capabilities")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            fail(f"{cn}: seccompProfile must be RuntimeDefault")
        res = c.get("resources") or {}
        if not (res.get("requests") and res.get("limits")):
            fail(f"{cn}: resources need requests and limits")
        if doc["kind"] == "Deployment":
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    fail(f"{cn}: no {probe}")
            if c["name"].startswith("poz-"):
                live = (c.get("livenessProbe") or {}).get("httpGet") or {}
                ready = (c.get("readinessProbe") or {}).get("httpGet") or {}
                if (live.get("path"), live.get("port")) != ("/healthz", "metrics"):
                    fail(f"{cn}: liveness must be httpGet /healthz on the metrics port")
                if (ready.get("path"), ready.get("port")) != ("/readyz", "metrics"):
                    fail(f"{cn}: readiness must be httpGet /readyz on the metrics port")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--namespace", required=True)
    ap.add_argument("--values", action="append", default=[])
    ap.add_argument("--ha", action="store_true")
    ap.add_argument("manifests")
    a = ap.parse_args()

    values = {}
    for f in a.values:
        with open(f) as fh:
            values = deep_merge(values, yaml.safe_load(fh) or {})
    with open(a.manifests) as fh:
        docs = [d for d in yaml.safe_load_all(fh) if d]
    ns = a.namespace
    ns_labels = {"kubernetes.io/metadata.name": ns}

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    policies = [{"ns": ns, "spec": p["spec"], "name": p["metadata"]["name"]}
                for p in by_kind.get("NetworkPolicy", [])]

    # Security context, resources and probes of every workload.
    for d in docs:
        if pod_spec_of(d):
            check_security(d)

    # Every Deployment has a budget that selects its pods.
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in by_kind.get("HorizontalPodAutoscaler", [])}
    for dep in by_kind.get("Deployment", []):
        labels = dep["spec"]["template"]["metadata"]["labels"]
        if not any(selector_matches(p["spec"]["selector"], labels) for p in pdbs):
            fail(f'Deployment/{dep["metadata"]["name"]}: no PodDisruptionBudget selects it')
        if a.ha:
            name = dep["metadata"]["name"]
            replicas = hpas[name]["spec"]["minReplicas"] if name in hpas else dep["spec"].get("replicas", 1)
            comp = labels.get("app.kubernetes.io/component")
            if comp != "redis" and replicas < 2:
                fail(f"Deployment/{name}: HA values give {replicas} replica(s)")
            spec = dep["spec"]["template"]["spec"]
            if comp != "redis" and not ((spec.get("affinity") or {}).get("podAntiAffinity")
                                        and spec.get("topologySpreadConstraints")):
                fail(f"Deployment/{name}: HA values need podAntiAffinity and topologySpreadConstraints")

    # The migration Job is a hook before install and upgrade (after the
    # install with the in-chart database, which the install creates).
    jobs = [j for j in by_kind.get("Job", []) if "migrate" in j["spec"]["template"]["spec"]["containers"][0]["command"]]
    if len(jobs) != 1:
        fail(f"expected one migration Job, found {len(jobs)}")
    for j in jobs:
        ann = j["metadata"].get("annotations") or {}
        hooks = set((ann.get("helm.sh/hook") or "").split(","))
        first = "post-install" if (values.get("postgresql") or {}).get("enabled") else "pre-install"
        if hooks != {first, "pre-upgrade"}:
            fail(f"migration Job hooks are {sorted(hooks)}, want {first},pre-upgrade")
        if ann.get("helm.sh/hook-delete-policy") != "before-hook-creation":
            fail("migration Job: hook-delete-policy must be before-hook-creation")

    # The rendered TOML files; the store never migrates by itself.
    configs = {}
    for cm in by_kind.get("ConfigMap", []):
        for key, text in (cm.get("data") or {}).items():
            if key.endswith(".toml"):
                try:
                    configs[(cm["metadata"]["name"], key)] = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    fail(f'ConfigMap/{cm["metadata"]["name"]} {key}: not TOML: {e}')
    prefix = values.get("namePrefix", "poz")
    store_cfg = configs.get((f"{prefix}-store", "poz-store.toml"))
    if store_cfg is None or store_cfg.get("migrate") is not False:
        fail("the store's config must set migrate = false")
    tls = (values.get("tls") or {}).get("enabled", True)
    for (cm, key), cfg in configs.items():
        if tls and "tls" not in cfg and cm != f"{prefix}-migrate":
            fail(f"{cm} {key}: TLS enabled but no [tls]")
        if not tls and "allow" in cfg:
            fail(f"{cm} {key}: [allow] with insecure is refused by the services")

    # Services: the gateways face the internet keeping client addresses;
    # the Provider API never does.
    for svc in by_kind.get("Service", []):
        comp = svc["metadata"]["labels"].get("app.kubernetes.io/component")
        typ = svc["spec"].get("type", "ClusterIP")
        if comp in GATEWAY_PORTS and typ == "LoadBalancer":
            if svc["spec"].get("externalTrafficPolicy") != "Local":
                fail(f'Service/{svc["metadata"]["name"]}: externalTrafficPolicy must be Local')
        elif typ != "ClusterIP":
            fail(f'Service/{svc["metadata"]["name"]}: {typ}, want ClusterIP')

    # Certificates: each names its identity and, for servers, every name
    # it is dialled by; usable both ways.
    for cert in by_kind.get("Certificate", []):
        comp = cert["metadata"]["labels"]["app.kubernetes.io/component"]
        names = set(cert["spec"].get("dnsNames") or [])
        want = {f"poz-{comp}"}
        if comp in GRPC_PORT:
            svc = f"{prefix}-{comp}"
            want |= {svc, f"{svc}.{ns}", f"{svc}.{ns}.svc", f"{svc}.{ns}.svc.cluster.local"}
        if not want <= names:
            fail(f'Certificate/{cert["metadata"]["name"]}: lacks {sorted(want - names)}')
        if not {"server auth", "client auth"} <= set(cert["spec"].get("usages") or []):
            fail(f'Certificate/{cert["metadata"]["name"]}: needs server auth and client auth')

    if not (values.get("networkPolicy") or {}).get("enabled", True):
        return
    # Who is where: the release's pods, the pods the values say carry the
    # other identities, and two strangers.
    pods = []
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            labels = d["spec"]["template"]["metadata"]["labels"]
            p = Pod(d["metadata"]["name"], labels, ns, ns_labels, True)
            if d["kind"] == "Deployment" and "poz-fleet/identity" in labels:
                p.identities.add(labels["poz-fleet/identity"])
            pods.append(p)
    fleet_ids = {i for p in pods for i in p.identities}
    peers = (values.get("networkPolicy") or {}).get("peers") or {}
    for ident, specs in peers.items():
        for n, spec in enumerate(specs or []):
            labels = dict((spec.get("podSelector") or {}).get("matchLabels") or {"app": "any"})
            if "namespaceSelector" in spec:
                nsl = dict(spec["namespaceSelector"].get("matchLabels") or {"any": "namespace"})
                pns = nsl.get("kubernetes.io/metadata.name", "elsewhere")
            else:
                nsl, pns = ns_labels, ns
            pods.append(Pod(f"{ident}#{n}", labels, pns, nsl, False))
    pods.append(Pod("stranger-here", {"app": "stranger"}, ns, ns_labels, False))
    pods.append(Pod("stranger-elsewhere", {"app": "stranger"}, "elsewhere",
                    {"kubernetes.io/metadata.name": "elsewhere"}, False))
    prom_sel = ((values.get("metrics") or {}).get("prometheusNamespaceSelector") or {}).get("matchLabels") or {}
    prometheus = Pod("prometheus", {"app": "prometheus"}, prom_sel.get("kubernetes.io/metadata.name", "monitoring"),
                     dict(prom_sel), False)
    # A pod outside the fleet carries every identity whose peers select it
    # (the network cannot tell two certificates in one namespace apart).
    for p in pods:
        if not p.fleet:
            for ident, specs in peers.items():
                if any(peer_matches(s, p, ns) for s in specs or []):
                    p.identities.add(ident)

    deployments = {d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component"): d
                   for d in by_kind.get("Deployment", [])}
    checked = 0
    for comp, port in GRPC_PORT.items():
        if comp not in deployments:
            continue
        dst = next(p for p in pods if p.fleet and p.labels.get("app.kubernetes.io/component") == comp)
        cfg = next((c for (cm, _), c in configs.items() if cm == f"{prefix}-{comp}"), {})
        allow = cfg.get("allow") or DEFAULT_ALLOW[comp]
        ids = {i for lst in allow.values() for i in lst}
        for ident in sorted(ids):
            carriers = [p for p in pods if ident in p.identities]
            if not carriers:
                if ident in {"poz-query-gw", "poz-submit-gw", "poz-provider-api"} - fleet_ids:
                    continue  # that component is not installed
                fail(f"{comp}:{port}: {ident} is on the allowlist but no pod carries it")
            for src in carriers:
                checked += 1
                if not allowed(policies, src, dst, port):
                    fail(f"{comp}:{port}: {src} ({ident}) is on the allowlist but the NetworkPolicies block it")
        for src in pods:
            if src is dst or src.identities & ids:
                continue
            checked += 1
            if allowed(policies, src, dst, port):
                fail(f"{comp}:{port}: {src} (identities {sorted(src.identities) or 'none'}) is on no allowlist "
                     f"of this port but the NetworkPolicies let it in")
        checked += 1
        if not allowed(policies, prometheus, dst, METRICS_PORT):
            fail(f"{comp}: Prometheus cannot reach the metrics port")
    stranger = next(p for p in pods if p.name == "stranger-elsewhere")
    for comp, ports in GATEWAY_PORTS.items():
        if comp not in deployments:
            continue
        dst = next(p for p in pods if p.fleet and p.labels.get("app.kubernetes.io/component") == comp)
        for port in ports:
            checked += 1
            if not allowed(policies, stranger, dst, port):
                fail(f"{comp}:{port}: the internet cannot reach it")
        checked += 1
        if allowed(policies, stranger, dst, METRICS_PORT):
            fail(f"{comp}: the metrics port is open to everyone")
    print(f"check_chart: {len(docs)} manifests, {checked} reachability checks", file=sys.stderr)


if __name__ == "__main__":
    main()
    for f in failures:
        print(f"FAIL: {f}", file=sys.stderr)
    sys.exit(1 if failures else 0)
