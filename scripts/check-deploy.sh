#!/usr/bin/env bash
# Validates the deployment files on this machine, without a cluster or Docker:
#
#   helm/agora/           lint (Helm v4 engine), render several value sets, schema
#                         rejection, every rendered object against the Kubernetes
#                         OpenAPI schemas (kubernetes-validate --strict), cross-references
#                         and hardening rules
#   k8s/                  `kubectl kustomize` of the base and every overlay, same checks
#   deploy/prometheus/    promtool check rules + promtool test rules (unit tests below)
#   deploy/grafana/       JSON parses, dashboard structure, every PromQL expression parses
#   deploy/compose.yaml   YAML parses, references (depends_on, configs, volumes) resolve
#   deploy/Dockerfile     build stages, SERVICE build arg, non-root runtime
#
# Installs what it needs (idempotent): pip helm-python-sdk and kubernetes-validate,
# promtool extracted from Debian's prometheus package into a cache directory
# (nothing is installed system-wide and no daemon is started). Needs kubectl
# (for `kubectl kustomize`) and python3 >= 3.10.
#
# Prints one line per check (ok / FAIL / skip) and exits non-zero if any failed.
#
# Environment:
#   KUBE_VERSIONS   Kubernetes versions to validate against (default "1.27.0 1.37.0":
#                   the chart's kubeVersion floor and the newest bundled schemas)
#   PROMTOOL        path to a promtool binary (default: on PATH, else the cached one)
#   AGORA_CHECK_CACHE  cache directory (default ~/.cache/agora-check-deploy)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
CACHE="${AGORA_CHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/agora-check-deploy}"
export KUBE_VERSIONS="${KUBE_VERSIONS:-1.27.0 1.37.0}"
mkdir -p "$CACHE"

say() { printf '%-5s %s\n' "$1" "$2"; }

# --- tools -------------------------------------------------------------------
# helm-python-sdk's API (Chart.load/render, lint) is pinned to the 0.2 line;
# kubernetes-validate >= 1.37 bundles the schemas of Kubernetes 1.25-1.37.
if ! "$PYTHON" - <<'PY' 2>/dev/null
import importlib.metadata as m
def v(name):
    return tuple(int(x) for x in m.version(name).split(".")[:3])
import helm_python, kubernetes_validate, yaml  # noqa: F401
assert (0, 2, 2) <= v("helm-python-sdk") < (0, 3, 0)
assert v("kubernetes-validate") >= (1, 37, 0)
PY
then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check \
    'helm-python-sdk>=0.2.2,<0.3' 'kubernetes-validate>=1.37.0' 'PyYAML>=6' \
    || { say FAIL "install: pip install helm-python-sdk kubernetes-validate"; exit 1; }
  say ok "install: helm-python-sdk, kubernetes-validate (pip)"
fi
if ! command -v kubectl >/dev/null; then
  say FAIL "tools: kubectl not found (needed for kubectl kustomize)"; exit 1
fi

if [[ -z "${PROMTOOL:-}" ]]; then
  if command -v promtool >/dev/null; then
    PROMTOOL="$(command -v promtool)"
  else
    PROMTOOL="$CACHE/promtool"
    if [[ ! -x "$PROMTOOL" ]]; then
      # promtool from Debian's prometheus package, unpacked, not installed.
      tmp="$(mktemp -d)"
      trap 'rm -rf "$tmp"' EXIT
      if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
        apt-get update -qq >/dev/null 2>&1 || true
        (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1) \
          || { say FAIL "install: apt-get download prometheus (for promtool)"; exit 1; }
      fi
      dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/x"
      install -m 0755 "$tmp/x/usr/bin/promtool" "$PROMTOOL"
      rm -rf "$tmp"
      trap - EXIT
      say ok "install: promtool $("$PROMTOOL" --version 2>&1 | head -1 | awk '{print $3}') from Debian's prometheus package -> $PROMTOOL"
    fi
  fi
fi
export PROMTOOL

# --- checks ------------------------------------------------------------------
exec "$PYTHON" - "$ROOT" <<'PY'
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import traceback

import yaml

ROOT = sys.argv[1]
PROMTOOL = os.environ["PROMTOOL"]
KUBE_VERSIONS = os.environ["KUBE_VERSIONS"].split()
CHART = os.path.join(ROOT, "helm", "agora")
# Custom resources kubernetes-validate has no schema for: skipped by kind.
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

failures = []


def report(status, name, detail="", problems=()):
    print(f"{status:<5} {name}" + (f": {detail}" if detail else ""))
    for p in list(problems)[:25]:
        print(f"        - {p}")
    if len(problems) > 25:
        print(f"        ... and {len(problems) - 25} more")
    if status == "FAIL":
        failures.append(name)
    sys.stdout.flush()


def check(name, fn):
    """Run fn() -> detail string or (detail, problems). Exceptions fail the check."""
    try:
        out = fn()
    except Exception as e:  # noqa: BLE001
        report("FAIL", name, f"{type(e).__name__}: {str(e).strip()[:2000]}")
        if os.environ.get("AGORA_CHECK_DEBUG"):
            traceback.print_exc()
        return None
    detail, problems = (out if isinstance(out, tuple) else (out, []))
    report("FAIL" if problems else "ok", name, detail, problems)
    return out


def run(cmd, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kw)


def docs_of(text):
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict) and d]


def kn(o):
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


WORK = tempfile.mkdtemp(prefix="agora-check-deploy-")
to_validate = {}  # source name -> list of (file, object)


def stage(source, objs):
    d = os.path.join(WORK, re.sub(r"[^a-z0-9]+", "-", source.lower()).strip("-"))
    os.makedirs(d, exist_ok=True)
    files = []
    for i, o in enumerate(objs):
        f = os.path.join(d, f"{i:02d}-{o['kind']}-{o['metadata']['name']}.yaml")
        with open(f, "w") as fh:
            yaml.safe_dump(o, fh, sort_keys=False)
        files.append((f, o))
    to_validate[source] = files


# ------------------------------------------------------------ object rules ---
CRED_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]+@", re.I)
SECRET_ENV = re.compile(r"(DATABASE|RATE_LIMIT|CACHE)_URL$")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_objects(objs):
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            yield o, o["spec"]["template"]


def object_problems(objs, *, expect_hook):
    """Cross-references and hardening rules shared by the chart and kustomize."""
    p = []
    seen = set()
    for o in objs:
        if kn(o) in seen:
            p.append(f"duplicate {kn(o)}")
        seen.add(kn(o))
    deps = [o for o in objs if o["kind"] == "Deployment"]
    svcs = [o for o in objs if o["kind"] == "Service"]
    jobs = [o for o in objs if o["kind"] == "Job"]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}

    def dep_for(selector):
        return [d for d in deps if matches(selector, d["spec"]["template"]["metadata"].get("labels", {}))]

    for d in deps:
        sel = d["spec"]["selector"]["matchLabels"]
        if not matches(sel, d["spec"]["template"]["metadata"].get("labels", {})):
            p.append(f"{kn(d)}: selector does not match its pod labels")
    for s in svcs:
        targets = dep_for(s["spec"].get("selector", {}))
        if len(targets) != 1:
            p.append(f"{kn(s)}: selector matches {len(targets)} Deployments")
            continue
        names = {cp.get("name") for c in targets[0]["spec"]["template"]["spec"]["containers"] for cp in c.get("ports", [])}
        for port in s["spec"]["ports"]:
            if isinstance(port.get("targetPort"), str) and port["targetPort"] not in names:
                p.append(f"{kn(s)}: targetPort {port['targetPort']} is no container port of {kn(targets[0])}")
    for h in (o for o in objs if o["kind"] == "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) not in by_name:
            p.append(f"{kn(h)}: scale target {ref['kind']}/{ref['name']} does not exist")
        if h["spec"].get("minReplicas", 1) > h["spec"]["maxReplicas"]:
            p.append(f"{kn(h)}: minReplicas > maxReplicas")
        dep = by_name.get(("Deployment", ref["name"]))
        if dep is not None and "replicas" in dep["spec"]:
            p.append(f"{kn(dep)}: sets replicas although {kn(h)} owns the count")
    for b in (o for o in objs if o["kind"] == "PodDisruptionBudget"):
        if len(dep_for(b["spec"]["selector"]["matchLabels"])) != 1:
            p.append(f"{kn(b)}: selector does not match exactly one Deployment")
    for m in (o for o in objs if o["kind"] == "ServiceMonitor"):
        targets = [s for s in svcs if matches(m["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
        if len(targets) != 1:
            p.append(f"{kn(m)}: selector matches {len(targets)} Services")
            continue
        pnames = {x.get("name") for x in targets[0]["spec"]["ports"]}
        for ep in m["spec"]["endpoints"]:
            if ep.get("port") not in pnames:
                p.append(f"{kn(m)}: endpoint port {ep.get('port')} not on {kn(targets[0])}")
    for ing in (o for o in objs if o["kind"] == "Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule["http"]["paths"]:
                be = path["backend"]["service"]
                s = by_name.get(("Service", be["name"]))
                if s is None:
                    p.append(f"{kn(ing)}: backend Service {be['name']} does not exist")
                elif be["port"].get("name") and be["port"]["name"] not in {x.get("name") for x in s["spec"]["ports"]}:
                    p.append(f"{kn(ing)}: backend port {be['port']['name']} not on {kn(s)}")

    store_urls_in_services = set()
    for o, tpl in pod_objects(objs):
        spec = tpl["spec"]
        psc = spec.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            p.append(f"{kn(o)}: pod securityContext.runAsNonRoot is not true")
        if spec.get("automountServiceAccountToken") is not False:
            p.append(f"{kn(o)}: automountServiceAccountToken is not false")
        if o["kind"] == "Deployment":
            if not spec.get("terminationGracePeriodSeconds"):
                p.append(f"{kn(o)}: no terminationGracePeriodSeconds")
        for c in spec["containers"]:
            where = f"{kn(o)}[{c['name']}]"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                p.append(f"{where}: readOnlyRootFilesystem is not true")
            if sc.get("allowPrivilegeEscalation") is not False:
                p.append(f"{where}: allowPrivilegeEscalation is not false")
            if "ALL" not in sc.get("capabilities", {}).get("drop", []):
                p.append(f"{where}: capabilities do not drop ALL")
            res = c.get("resources", {})
            if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
                p.append(f"{where}: needs cpu/memory requests and a memory limit")
            image = c.get("image", "")
            if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
                p.append(f"{where}: image {image!r} has no pinned tag")
            ports = {cp.get("name"): cp["containerPort"] for cp in c.get("ports", [])}
            envs = {e["name"]: e for e in c.get("env", [])}
            for e in c.get("env", []):
                v = e.get("value")
                if isinstance(v, str) and CRED_URL.search(v):
                    p.append(f"{where}: env {e['name']} carries credentials in plain text")
                if SECRET_ENV.search(e["name"]) and "secretKeyRef" not in e.get("valueFrom", {}):
                    p.append(f"{where}: env {e['name']} must come from a Secret (secretKeyRef)")
                if e["name"].endswith("_DATABASE_URL") and o["kind"] == "Deployment":
                    store_urls_in_services.add(e["name"])
            if len(envs) != len(c.get("env", [])):
                p.append(f"{where}: duplicate env names")
            if o["kind"] != "Deployment":
                continue
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                g = c.get(probe, {}).get("httpGet", {})
                if g.get("path") != path or g.get("port") != "admin":
                    p.append(f"{where}: {probe} must GET {path} on the admin port")
            if not c.get("lifecycle", {}).get("preStop"):
                p.append(f"{where}: no preStop hook (drain delay)")
            # AGORA_<SVC>_LISTEN / _ADMIN_LISTEN agree with the container ports.
            for name, e in envs.items():
                m = re.fullmatch(r"AGORA_[A-Z0-9_]+?_(ADMIN_)?LISTEN", name)
                if m and "value" in e:
                    port = int(e["value"].rsplit(":", 1)[1])
                    want = ports.get("admin") if m.group(1) else next((v for k, v in ports.items() if k != "admin"), None)
                    if port != want:
                        p.append(f"{where}: {name}={e['value']} does not match container port {want}")
                # Upstream URLs (the gateway's AGORA_GATEWAY_<SVC>_URL and the
                # services' AGORA_<SVC>_<UPSTREAM>_URL) point at the main (gRPC)
                # port of an existing Service.
                m = re.fullmatch(r"AGORA_([A-Z0-9_]+)_URL", name)
                if m and name != "AGORA_PUBLIC_URL" and "value" in e and e["value"].startswith("http"):
                    hostport = e["value"].split("://", 1)[1].rstrip("/")
                    host, port = hostport.rsplit(":", 1)
                    s = by_name.get(("Service", host.split(".")[0]))
                    if s is None or int(port) not in {x["port"] for x in s["spec"]["ports"] if x.get("name") != "admin"}:
                        p.append(f"{where}: {name}={e['value']} names no Service's main port")
    # The migration Job migrates every store a service uses.
    migrate = [j for j in jobs if j["metadata"]["name"].endswith("migrate")]
    if len(migrate) != 1:
        p.append(f"expected one migration Job, found {len(migrate)}")
    else:
        j = migrate[0]
        c = j["spec"]["template"]["spec"]["containers"][0]
        if c.get("args") != ["migrate"]:
            p.append(f"{kn(j)}: args should be [migrate], got {c.get('args')}")
        job_env = {e["name"] for e in c.get("env", [])}
        for missing in sorted(store_urls_in_services - job_env):
            p.append(f"{kn(j)}: does not get {missing}, so that store is never migrated")
        hooks = j["metadata"].get("annotations", {}).get("helm.sh/hook", "")
        if expect_hook and set(hooks.split(",")) != {"pre-install", "pre-upgrade"}:
            p.append(f"{kn(j)}: helm.sh/hook is {hooks!r}, want pre-install,pre-upgrade")
        if j["spec"]["template"]["spec"].get("restartPolicy") not in ("Never", "OnFailure"):
            p.append(f"{kn(j)}: restartPolicy must be Never or OnFailure")
    return p


def kinds(objs):
    out = {}
    for o in objs:
        out[o["kind"]] = out.get(o["kind"], 0) + 1
    return out


def summary(objs):
    return ", ".join(f"{v} {k}" for k, v in sorted(kinds(objs).items()))


# -------------------------------------------------------------------- helm ---
import helm_python as helm  # noqa: E402

print(f"info  helm engine: helm-c {helm.helm_c_version()}, Helm SDK {helm.helm_sdk_version()}; "
      f"Kubernetes schemas: {' '.join(KUBE_VERSIONS)}")


def lint(values, label):
    def fn():
        probs = []
        for kv in KUBE_VERSIONS:
            r = helm.lint(CHART, values, strict=True, namespace="agora", kube_version=f"v{kv}")
            probs += [f"[{kv}] {e}" for e in r.get("errors", [])]
            # severity 2 = warning, 3 = error; strict treats warnings as failures.
            probs += [f"[{kv}] {m['path']}: {m['error'].strip()}" for m in r.get("messages", []) if m["severity"] >= 2]
        infos = {m["error"] for m in r.get("messages", []) if m["severity"] < 2}
        return (f"{r.get('total_charts_linted')} chart, strict" + (f" (info: {'; '.join(sorted(infos))})" if infos else ""), probs)
    check(f"helm lint ({label})", fn)


def render(values, release="agora", namespace="agora", upgrade=False):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
        out = chart.render(values, name=release, namespace=namespace,
                           is_install=not upgrade, is_upgrade=upgrade)
    notes = "".join(v for k, v in out.items() if k.endswith("NOTES.txt"))
    objs = [d for k, v in sorted(out.items()) if not k.endswith("NOTES.txt") for d in docs_of(v)]
    return objs, notes


def env_of(objs, kind, name):
    o = next(o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name)
    return {e["name"]: e for e in o["spec"]["template"]["spec"]["containers"][0].get("env", [])}


FULL = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "ingress": {"enabled": True, "className": "nginx",
                "tls": [{"secretName": "social-example-tls", "hosts": ["social.example"]}]},
}
# A further service added the way values.yaml documents (with upstreams),
# plus a release name that does not contain "agora", an upgrade render, and
# HPA off for user.
EXTRA = {
    "services": {
        "messaging": {"port": 50056, "adminPort": 9106, "upstreams": ["user", "graph"],
                      "secretEnv": {"AGORA_MESSAGING_DATABASE_URL": "messaging-database-url"}},
        "user": {"autoscaling": {"enabled": False}, "replicas": 3},
    },
    "secrets": {"existingSecret": "social-urls"},
    "env": {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4317"},
}

lint(None, "default values")
lint(FULL, "serviceMonitor + ingress enabled")
lint(EXTRA, "extra service 'messaging'")


def helm_default():
    objs, notes = render(None)
    k = kinds(objs)
    want = {"Deployment": 6, "Service": 6, "HorizontalPodAutoscaler": 6, "PodDisruptionBudget": 6,
            "Job": 1, "ServiceAccount": 1}
    probs = [f"kinds: got {k}, want {want}"] if k != want else []
    probs += object_problems(objs, expect_hook=True)
    if "agora-secrets" not in notes:
        probs.append("NOTES.txt does not name the Secret to create")
    gw = env_of(objs, "Deployment", "agora-gateway")
    for name, want_v in (("AGORA_GATEWAY_USER_URL", "http://agora-user:50051"),
                         ("AGORA_GATEWAY_POST_URL", "http://agora-post:50052"),
                         ("AGORA_GATEWAY_GRAPH_URL", "http://agora-graph:50053"),
                         ("AGORA_GATEWAY_FEED_URL", "http://agora-feed:50054"),
                         ("AGORA_GATEWAY_NOTIFICATION_URL", "http://agora-notification:50055"),
                         ("AGORA_GATEWAY_LISTEN", "0.0.0.0:8080"),
                         ("AGORA_GATEWAY_ADMIN_LISTEN", "0.0.0.0:9100"),
                         ("AGORA_PUBLIC_URL", "https://social.example")):
        if gw.get(name, {}).get("value") != want_v:
            probs.append(f"gateway {name} = {gw.get(name)}, want {want_v}")
    us = env_of(objs, "Deployment", "agora-user")
    for name, want_v in (("AGORA_USER_LISTEN", "0.0.0.0:50051"), ("AGORA_USER_ADMIN_LISTEN", "0.0.0.0:9101"),
                         ("AGORA_MIGRATE_ON_START", "false")):
        if us.get(name, {}).get("value") != want_v:
            probs.append(f"user {name} = {us.get(name)}, want {want_v}")
    if "OTEL_EXPORTER_OTLP_ENDPOINT" in us:
        probs.append("an empty OTEL_EXPORTER_OTLP_ENDPOINT is rendered (should be omitted)")
    # post, graph, feed and notification: ports, upstream URLs (from `upstreams`),
    # settings, secrets.
    want_env = {
        "post": {"AGORA_POST_LISTEN": "0.0.0.0:50052", "AGORA_POST_ADMIN_LISTEN": "0.0.0.0:9102",
                 "AGORA_POST_USER_URL": "http://agora-user:50051",
                 "AGORA_POST_GRAPH_URL": "http://agora-graph:50053", "AGORA_POST_MAX_CHARS": "500"},
        "graph": {"AGORA_GRAPH_LISTEN": "0.0.0.0:50053", "AGORA_GRAPH_ADMIN_LISTEN": "0.0.0.0:9103",
                  "AGORA_GRAPH_USER_URL": "http://agora-user:50051"},
        "feed": {"AGORA_FEED_LISTEN": "0.0.0.0:50054", "AGORA_FEED_ADMIN_LISTEN": "0.0.0.0:9104",
                 "AGORA_FEED_USER_URL": "http://agora-user:50051",
                 "AGORA_FEED_GRAPH_URL": "http://agora-graph:50053",
                 "AGORA_FEED_POST_URL": "http://agora-post:50052",
                 "AGORA_FEED_HOT_SET_SIZE": "800", "AGORA_FEED_LARGE_ACCOUNT_FOLLOWERS": "10000",
                 "AGORA_FEED_INACTIVE_AFTER": "1209600", "AGORA_FEED_BACKFILL": "40"},
        "notification": {"AGORA_NOTIFICATION_LISTEN": "0.0.0.0:50055",
                         "AGORA_NOTIFICATION_ADMIN_LISTEN": "0.0.0.0:9105",
                         "AGORA_NOTIFICATION_USER_URL": "http://agora-user:50051",
                         "AGORA_NOTIFICATION_POST_URL": "http://agora-post:50052",
                         "AGORA_NOTIFICATION_GRAPH_URL": "http://agora-graph:50053"},
    }
    want_secret = {"post": {"AGORA_POST_DATABASE_URL": "post-database-url"},
                   "graph": {"AGORA_GRAPH_DATABASE_URL": "graph-database-url"},
                   "feed": {"AGORA_FEED_DATABASE_URL": "feed-database-url",
                            "AGORA_FEED_CACHE_URL": "feed-cache-url"},
                   "notification": {"AGORA_NOTIFICATION_DATABASE_URL": "notification-database-url"}}
    job = env_of(objs, "Job", "agora-migrate")
    for svc, envs in want_env.items():
        got = env_of(objs, "Deployment", f"agora-{svc}")
        for name, want_v in envs.items():
            if got.get(name, {}).get("value") != want_v:
                probs.append(f"{svc} {name} = {got.get(name)}, want {want_v}")
        for name, key in want_secret[svc].items():
            for where, e in ((svc, got), ("migration Job", job)):
                ref = e.get(name, {}).get("valueFrom", {}).get("secretKeyRef", {})
                if ref != {"name": "agora-secrets", "key": key}:
                    probs.append(f"{where} {name} secretKeyRef = {ref}, want agora-secrets/{key}")
            if key not in notes:
                probs.append(f"NOTES.txt does not list the Secret key {key}")
    stage("helm: default values", objs)
    return summary(objs), probs


def helm_full():
    objs, notes = render(FULL)
    k = kinds(objs)
    probs = []
    if k.get("ServiceMonitor") != 6 or k.get("Ingress") != 1:
        probs.append(f"want 6 ServiceMonitor and 1 Ingress, got {k}")
    probs += object_problems(objs, expect_hook=True)
    sm = [o for o in objs if o["kind"] == "ServiceMonitor"]
    if any(o["metadata"]["labels"].get("release") != "kube-prometheus-stack" for o in sm):
        probs.append("serviceMonitor.labels not applied")
    if "https://social.example" not in notes:
        probs.append("NOTES.txt does not show the ingress URL")
    stage("helm: serviceMonitor + ingress", objs)
    return summary(objs), probs


def helm_extra():
    objs, _ = render(EXTRA, release="social", namespace="prod", upgrade=True)
    probs = object_problems(objs, expect_hook=True)
    names = {kn(o) for o in objs}
    for want in ("Deployment/social-agora-messaging", "Service/social-agora-messaging",
                 "HorizontalPodAutoscaler/social-agora-messaging", "PodDisruptionBudget/social-agora-messaging",
                 "Deployment/social-agora-feed", "Deployment/social-agora-notification"):
        if want not in names:
            probs.append(f"missing {want}")
    if "HorizontalPodAutoscaler/social-agora-user" in names:
        probs.append("user HPA rendered although autoscaling.enabled=false")
    user = next(o for o in objs if kn(o) == "Deployment/social-agora-user")
    if user["spec"].get("replicas") != 3:
        probs.append("user replicas not 3 with autoscaling off")
    gw = env_of(objs, "Deployment", "social-agora-gateway")
    for up, port in (("MESSAGING", 50056), ("FEED", 50054), ("NOTIFICATION", 50055)):
        got = gw.get(f"AGORA_GATEWAY_{up}_URL", {}).get("value")
        if got != f"http://social-agora-{up.lower()}:{port}":
            probs.append(f"gateway AGORA_GATEWAY_{up}_URL = {got}")
    msg = env_of(objs, "Deployment", "social-agora-messaging")
    if msg.get("AGORA_MESSAGING_LISTEN", {}).get("value") != "0.0.0.0:50056":
        probs.append("messaging AGORA_MESSAGING_LISTEN not derived from its port")
    for name, want_v in (("AGORA_MESSAGING_USER_URL", "http://social-agora-user:50051"),
                         ("AGORA_MESSAGING_GRAPH_URL", "http://social-agora-graph:50053")):
        if msg.get(name, {}).get("value") != want_v:
            probs.append(f"messaging {name} = {msg.get(name)}, want {want_v} (from upstreams)")
    feed = env_of(objs, "Deployment", "social-agora-feed")
    if feed.get("AGORA_FEED_POST_URL", {}).get("value") != "http://social-agora-post:50052":
        probs.append(f"feed AGORA_FEED_POST_URL = {feed.get('AGORA_FEED_POST_URL')} (release name not applied)")
    ref = msg.get("AGORA_MESSAGING_DATABASE_URL", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if ref != {"name": "social-urls", "key": "messaging-database-url"}:
        probs.append(f"messaging database URL secretKeyRef = {ref}")
    job = env_of(objs, "Job", "social-agora-migrate")
    for store in ("USER", "POST", "GRAPH", "FEED", "NOTIFICATION", "MESSAGING"):
        if f"AGORA_{store}_DATABASE_URL" not in job:
            probs.append(f"migration Job lacks AGORA_{store}_DATABASE_URL")
    if gw.get("OTEL_EXPORTER_OTLP_ENDPOINT", {}).get("value") != "http://otel-collector.observability:4317":
        probs.append("shared env OTEL_EXPORTER_OTLP_ENDPOINT not rendered")
    stage("helm: extra service messaging", objs)
    return summary(objs), probs


def helm_rejects():
    probs = []
    cases = [
        ("typo in a service key", {"services": {"user": {"prot": 1}}}, helm.HelmValuesError),
        ("port as a string", {"services": {"user": {"port": "x"}}}, helm.HelmValuesError),
        ("nested env value", {"env": {"AGORA_LOG": {"a": 1}}}, helm.HelmValuesError),
        ("ingress to an unknown service", {"ingress": {"enabled": True, "service": "nope"}}, helm.HelmError),
        ("upstream that is no service", {"services": {"post": {"upstreams": ["nope"]}}}, helm.HelmError),
        ("upstream that is disabled", {"services": {"graph": {"enabled": False}}}, helm.HelmError),
        ("upstreams not a list", {"services": {"feed": {"upstreams": "user"}}}, helm.HelmValuesError),
    ]
    # The Go engine warns on stderr about the bad values; keep the output to one line.
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        for label, values, exc in cases:
            try:
                render(values)
                probs.append(f"{label}: rendered without error")
            except exc:
                pass
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return f"{len(cases)} bad value sets rejected", probs


def helm_no_credentials():
    probs = []
    with open(os.path.join(CHART, "values.yaml")) as fh:
        text = fh.read()
    for i, line in enumerate(text.splitlines(), 1):
        code = line.split("#", 1)[0]
        if re.search(r"://[^/@\s'\"]*:[^/@\s'\"]+@", code):
            probs.append(f"values.yaml:{i}: URL with credentials")
        if re.search(r"(?i)(password|passwd|secret|token)\w*\s*:\s*['\"]?[^'\"\s{}\[\]]+", code) \
                and not re.search(r"(?i)existingSecret\s*:\s*(\"\"|'')", code) \
                and not re.search(r"(?i)(secretEnv|secretKeyRef|_TTL)", code) \
                and not re.search(r":\s*[a-z0-9-]+-url\s*$", code):
            probs.append(f"values.yaml:{i}: looks like a credential: {line.strip()}")
    return "values.yaml holds no credentials; URLs come from secrets.existingSecret", probs


check("helm render (default values)", helm_default)
check("helm render (serviceMonitor + ingress enabled)", helm_full)
check("helm render (extra service, other release name, upgrade)", helm_extra)
check("helm values schema rejects bad values", helm_rejects)
check("helm values carry no credentials", helm_no_credentials)

# --------------------------------------------------------------- kustomize ---
def kustomize(rel):
    r = run(["kubectl", "kustomize", os.path.join(ROOT, rel)])
    if r.returncode != 0:
        raise RuntimeError(r.stderr.strip())
    return docs_of(r.stdout)


SERVICES = ("user", "post", "graph", "feed", "notification", "gateway")


def k_base():
    objs = kustomize("k8s/base")
    probs = object_problems(objs, expect_hook=False)
    n = len(SERVICES)
    want = {"ConfigMap": 1, "Deployment": n, "Service": n, "HorizontalPodAutoscaler": n,
            "PodDisruptionBudget": n, "Job": 1, "ServiceAccount": 1}
    if kinds(objs) != want:
        probs.append(f"kinds: got {kinds(objs)}, want {want}")
    names = {kn(o) for o in objs}
    for svc in SERVICES:
        for kind in ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
            if f"{kind}/agora-{svc}" not in names:
                probs.append(f"missing {kind}/agora-{svc}")
    gw = env_of(objs, "Deployment", "agora-gateway")
    for svc in SERVICES[:-1]:
        if f"AGORA_GATEWAY_{svc.upper()}_URL" not in gw:
            probs.append(f"gateway lacks AGORA_GATEWAY_{svc.upper()}_URL")
    stage("kustomize: k8s/base", objs)
    return summary(objs), probs


def k_overlay(name):
    def fn():
        objs = kustomize(f"k8s/overlays/{name}")
        probs = object_problems(objs, expect_hook=False)
        ns = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
        if len(ns) != 1 or None in ns:
            probs.append(f"objects are not all in one namespace: {ns}")
        deps = [o for o in objs if o["kind"] == "Deployment"]
        hpas = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
        if len(deps) != len(SERVICES):
            probs.append(f"{len(deps)} Deployments, want {len(SERVICES)} ({', '.join(SERVICES)})")
        if name == "dev":
            if hpas:
                probs.append("dev overlay keeps HPAs")
            if any(d["spec"].get("replicas") != 1 for d in deps):
                probs.append("dev Deployments are not at 1 replica")
        if name == "production":
            if any(h["spec"].get("minReplicas", 1) < 2 for h in hpas) or len(hpas) != len(deps):
                probs.append("production: every Deployment needs an HPA with minReplicas >= 2")
            k = kinds(objs)
            if k.get("ServiceMonitor") != len(deps) or k.get("Ingress") != 1:
                probs.append(f"production: want a ServiceMonitor per service and an Ingress, got {k}")
        for o, tpl in pod_objects(objs):
            for c in tpl["spec"]["containers"]:
                tag = c["image"].rsplit(":", 1)[-1]
                if name == "dev" and tag != "dev":
                    probs.append(f"{kn(o)}: image tag {tag}, want dev")
                if name == "production" and not re.fullmatch(r"\d+\.\d+\.\d+.*", tag):
                    probs.append(f"{kn(o)}: production image tag {tag!r} is not a version")
        stage(f"kustomize: k8s/overlays/{name}", objs)
        return summary(objs), probs
    return fn


check("kustomize build (k8s/base)", k_base)
overlays = sorted(os.path.basename(d) for d in glob.glob(os.path.join(ROOT, "k8s", "overlays", "*")) if os.path.isdir(d))
for ov in overlays:
    check(f"kustomize build (k8s/overlays/{ov})", k_overlay(ov))
if not {"dev", "production"} <= set(overlays):
    report("FAIL", "kustomize overlays", f"want dev and production, found {overlays}")

# ------------------------------------------------- kubernetes-validate ---
for kv in KUBE_VERSIONS:
    files = [(src, f) for src, fs in to_validate.items() for f, o in fs if o["kind"] not in CRD_KINDS]
    skipped = sorted({f"{o['kind']}" for fs in to_validate.values() for f, o in fs if o["kind"] in CRD_KINDS})
    # `python -m kubernetes_validate` is the kubernetes-validate command, run by
    # this interpreter (a fresh pyenv may not have rehashed the console script yet).
    r = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", kv] + [f for _, f in files])
    lines = [l for l in (r.stdout + r.stderr).splitlines() if l.strip()]
    for src in to_validate:
        mine = [f for s, f in files if s == src]
        bad = [l for l in lines if any(f in l for f in mine) and not l.startswith("INFO")]
        n_crd = sum(1 for f, o in to_validate[src] if o["kind"] in CRD_KINDS)
        extra = f"; {n_crd} custom resources skipped (no schema)" if n_crd else ""
        report("FAIL" if bad else "ok", f"kubernetes-validate --strict -k {kv} ({src})",
               f"{len(mine)} objects{extra}", [l.replace(WORK + "/", "") for l in bad])
    unattributed = [l for l in lines if not any(f in l for _, f in files) and not l.startswith("INFO")]
    if unattributed or (r.returncode != 0 and not lines):
        report("FAIL", f"kubernetes-validate -k {kv}", f"exit {r.returncode}, unexpected output", unattributed)
if skipped:
    report("skip", "kubernetes-validate of " + ", ".join(skipped),
           "CRD (monitoring.coreos.com) schemas are not bundled; checked by the cross-reference rules above instead")

# ------------------------------------------------------------- prometheus ---
RULES = os.path.join(ROOT, "deploy", "prometheus", "agora-rules.yaml")


# The feed service's own metrics (agora_feed_fanout_seconds is a summary unless
# the process configures histogram buckets for it; the rules accept both).
FEED_METRICS = ("agora_feed_fanout_seconds", "agora_feed_fanout_recipients_total",
                "agora_feed_hot_set_hits_total")


def prom_check():
    r = run([PROMTOOL, "check", "rules", RULES])
    if r.returncode != 0:
        raise RuntimeError((r.stdout + r.stderr).strip())
    groups = yaml.safe_load(open(RULES))["groups"]
    names = {x.get("alert") or x.get("record") for g in groups for x in g["rules"]}
    probs = []
    for want in ("AgoraHttp5xxRatioHigh", "AgoraHttpLatencyP99High", "AgoraGrpcErrorRatioHigh",
                 "AgoraGrpcLatencyP99High", "AgoraOutboxBacklogGrowing", "AgoraConsumerLagHigh",
                 "AgoraFeedConsumerLagHigh", "AgoraFeedFanoutLatencyP99High"):
        if want not in names:
            probs.append(f"missing alert {want}")
    text = open(RULES).read()
    for metric in FEED_METRICS + ("agora_http_requests_total", "agora_http_request_duration_seconds_bucket",
                                  "agora_grpc_requests_total", "agora_grpc_request_duration_seconds_bucket",
                                  "agora_outbox_backlog", "agora_consumer_lag"):
        if metric not in text:
            probs.append(f"no rule uses {metric}")
    n_alert = sum(1 for g in groups for x in g["rules"] if "alert" in x)
    return f"promtool check rules: {len(names) - n_alert} recording, {n_alert} alerting", probs


PROM_TESTS = r"""
rule_files: [RULES]
evaluation_interval: 30s
tests:
  - interval: 30s
    input_series:
      # gateway: 90 req/s 200 + 10 req/s 500 -> 10% 5xx
      - series: 'agora_http_requests_total{job="agora-gateway",instance="g1",route="/api/v1/statuses",method="POST",status="200"}'
        values: '0+2700x80'
      - series: 'agora_http_requests_total{job="agora-gateway",instance="g1",route="/api/v1/statuses",method="POST",status="500"}'
        values: '0+300x80'
      # user (server side): 10/s OK, 10/s NotFound (a client error), 1/s Internal by number,
      # 1/s Internal by name
      - series: 'agora_grpc_requests_total{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",code="0"}'
        values: '0+300x80'
      - series: 'agora_grpc_requests_total{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",code="5"}'
        values: '0+300x80'
      - series: 'agora_grpc_requests_total{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",code="13"}'
        values: '0+30x80'
      - series: 'agora_grpc_requests_total{job="agora-user",instance="u2",side="server",service="agora.user.v1.UserService",method="GetAccount",code="Internal"}'
        values: '0+30x80'
      # gateway (client side): every call fails; must not count as the gateway's own errors
      - series: 'agora_grpc_requests_total{job="agora-gateway",instance="g1",side="client",service="agora.user.v1.UserService",method="GetAccount",code="14"}'
        values: '0+300x80'
      # every gRPC call lands in the (0.1s, 2s] bucket -> p99 ~ 2s
      - series: 'agora_grpc_request_duration_seconds_bucket{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",le="0.1"}'
        values: '0x80'
      - series: 'agora_grpc_request_duration_seconds_bucket{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",le="2"}'
        values: '0+300x80'
      - series: 'agora_grpc_request_duration_seconds_bucket{job="agora-user",instance="u1",side="server",service="agora.user.v1.UserService",method="GetAccount",le="+Inf"}'
        values: '0+300x80'
      # outbox: two replicas report the same table, growing for 30 minutes, then flat
      # (flat at the evaluation time, so the alert's value does not depend on
      # the order in which rule groups are evaluated)
      - series: 'agora_outbox_backlog{job="agora-user",instance="u1",service="user"}'
        values: '2000+100x60 8000x20'
      - series: 'agora_outbox_backlog{job="agora-user",instance="u2",service="user"}'
        values: '2000+100x60 8000x20'
      # consumer lag: two partitions, 6000 each, flat
      - series: 'agora_consumer_lag{job="agora-feed",instance="f1",group="feed.post",topic="agora.post.v1",partition="0"}'
        values: '6000x80'
      - series: 'agora_consumer_lag{job="agora-feed",instance="f2",group="feed.post",topic="agora.post.v1",partition="1"}'
        values: '6000x80'
      # another group 6000 behind: above the feed threshold, but not the feed group
      - series: 'agora_consumer_lag{job="agora-search",instance="s1",group="search",topic="agora.post.v1",partition="0"}'
        values: '6000x80'
      # feed: fan-out latency as the exporter's default summary (no buckets configured):
      # p99 4s on f1, 1s on f2; p50 0.2s / 0.1s
      - series: 'agora_feed_fanout_seconds{job="agora-feed",instance="f1",quantile="0.99"}'
        values: '4x80'
      - series: 'agora_feed_fanout_seconds{job="agora-feed",instance="f2",quantile="0.99"}'
        values: '1x80'
      - series: 'agora_feed_fanout_seconds{job="agora-feed",instance="f1",quantile="0.5"}'
        values: '0.2x80'
      - series: 'agora_feed_fanout_seconds{job="agora-feed",instance="f2",quantile="0.5"}'
        values: '0.1x80'
      # 1 fan-out/s reaching 100 home timelines/s; hot set: 9 hits/s, 1 miss/s
      - series: 'agora_feed_fanout_seconds_count{job="agora-feed",instance="f1"}'
        values: '0+30x80'
      - series: 'agora_feed_fanout_recipients_total{job="agora-feed",instance="f1"}'
        values: '0+3000x80'
      - series: 'agora_feed_hot_set_hits_total{job="agora-feed",instance="f1",result="hit"}'
        values: '0+270x80'
      - series: 'agora_feed_hot_set_hits_total{job="agora-feed",instance="f1",result="miss"}'
        values: '0+30x80'
      - series: 'up{job="agora-user",instance="u1"}'
        values: '0x80'
    promql_expr_test:
      - expr: job:agora_http_errors:ratio_rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_http_errors:ratio_rate5m{job="agora-gateway"}'
            value: 0.1
      - expr: job:agora_grpc_errors:ratio_rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_grpc_errors:ratio_rate5m{job="agora-user"}'
            value: 0.09090909090909091
      - expr: job:agora_outbox_backlog:max
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_outbox_backlog:max{job="agora-user",service="user"}'
            value: 4000
      - expr: job:agora_consumer_lag:sum
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_consumer_lag:sum{job="agora-feed",group="feed.post",topic="agora.post.v1"}'
            value: 12000
          - labels: 'job:agora_consumer_lag:sum{job="agora-search",group="search",topic="agora.post.v1"}'
            value: 6000
      - expr: job:agora_feed_fanout_seconds:p99_5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanout_seconds:p99_5m{job="agora-feed"}'
            value: 4
      - expr: job:agora_feed_fanout_seconds:p50_5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanout_seconds:p50_5m{job="agora-feed"}'
            value: 0.2
      - expr: job:agora_feed_fanouts:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanouts:rate5m{job="agora-feed"}'
            value: 1
      - expr: job:agora_feed_fanout_recipients:rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanout_recipients:rate5m{job="agora-feed"}'
            value: 100
      - expr: job:agora_feed_hot_set_hits:ratio_rate5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_hot_set_hits:ratio_rate5m{job="agora-feed"}'
            value: 0.9
    alert_rule_test:
      - eval_time: 20m
        alertname: AgoraHttp5xxRatioHigh
        exp_alerts:
          - exp_labels: {severity: critical, job: agora-gateway}
            exp_annotations:
              summary: "agora-gateway: 10% of HTTP requests fail with 5xx"
              description: More than 5% of HTTP requests to agora-gateway returned a 5xx status over the last 5 minutes.
      - eval_time: 20m
        alertname: AgoraGrpcErrorRatioHigh
        exp_alerts:
          - exp_labels: {severity: critical, job: agora-user}
            exp_annotations:
              summary: "agora-user: 9.091% of gRPC calls fail"
              description: More than 5% of gRPC calls to agora-user ended with a server-side error code over the last 5 minutes.
      - eval_time: 20m
        alertname: AgoraGrpcLatencyP99High
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-user}
            exp_annotations:
              summary: "agora-user: gRPC p99 latency is 1.981s"
              description: The 99th percentile of gRPC call duration on agora-user has been above 500ms for 10 minutes.
      - eval_time: 20m
        alertname: AgoraHttpLatencyP99High
        exp_alerts: []
      - eval_time: 35m
        alertname: AgoraOutboxBacklogGrowing
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-user, service: user}
            exp_annotations:
              summary: "agora-user: outbox backlog at 8000 and growing"
              description: Events of agora-user are committed faster than the outbox relay publishes them (is the Kafka broker reachable?). Downstream services see stale data.
      - eval_time: 20m
        alertname: AgoraConsumerLagHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-feed, group: feed.post, topic: agora.post.v1}
            exp_annotations:
              summary: "agora-feed: consumer lag 12000"
              description: A consumer of agora-feed is more than 10000 messages behind on agora.post.v1 for 10 minutes.
      - eval_time: 40m
        alertname: AgoraConsumerLagGrowing
        exp_alerts: []
      - eval_time: 10m
        alertname: AgoraTargetDown
        exp_alerts:
          - exp_labels: {severity: critical, job: agora-user, instance: u1}
            exp_annotations:
              summary: "agora-user (u1) is not being scraped"
              description: Prometheus could not scrape u1 of agora-user for 5 minutes.
      # feed lag: pending (for 5m) at 4m, firing at 10m; the search group never
      - eval_time: 4m
        alertname: AgoraFeedConsumerLagHigh
        exp_alerts: []
      - eval_time: 10m
        alertname: AgoraFeedConsumerLagHigh
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-feed, group: feed.post, topic: agora.post.v1}
            exp_annotations:
              summary: "agora-feed: feed consumer 12000 messages behind on agora.post.v1"
              description: A feed consumer group (feed.post, feed.graph) is more than 5000 messages behind on agora.post.v1 for 5 minutes, so new statuses and follows reach home timelines late. Check fan-out latency, the feed replicas' CPU, and the hot-set Redis.
      # fan-out p99 4s (max over replicas): pending at 8m, firing at 20m
      - eval_time: 8m
        alertname: AgoraFeedFanoutLatencyP99High
        exp_alerts: []
      - eval_time: 20m
        alertname: AgoraFeedFanoutLatencyP99High
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-feed}
            exp_annotations:
              summary: "agora-feed: fan-out p99 is 4s"
              description: The 99th percentile time to fan a status out to its followers' home timelines on agora-feed has been above 3s for 10 minutes (large accounts above AGORA_FEED_LARGE_ACCOUNT_FOLLOWERS are merged at read time and not fanned out).

  # Fan-out latency exported as a histogram (if buckets are configured for it):
  # the histogram wins over a summary of the same job. Every fan-out lands in
  # (1s, 5s] -> p99 = 1 + 4 * 0.99 = 4.96s, p50 = 3s.
  - interval: 30s
    input_series:
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed",instance="f1",le="1"}'
        values: '0x80'
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed",instance="f1",le="5"}'
        values: '0+30x80'
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed",instance="f1",le="+Inf"}'
        values: '0+30x80'
      - series: 'agora_feed_fanout_seconds{job="agora-feed",instance="f2",quantile="0.99"}'
        values: '0.1x80'
      # below the threshold: 2s p99 never alerts
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed-canary",instance="c1",le="1"}'
        values: '0x80'
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed-canary",instance="c1",le="2"}'
        values: '0+30x80'
      - series: 'agora_feed_fanout_seconds_bucket{job="agora-feed-canary",instance="c1",le="+Inf"}'
        values: '0+30x80'
    promql_expr_test:
      - expr: job:agora_feed_fanout_seconds:p99_5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanout_seconds:p99_5m{job="agora-feed"}'
            value: 4.96
          - labels: 'job:agora_feed_fanout_seconds:p99_5m{job="agora-feed-canary"}'
            value: 1.99
      - expr: job:agora_feed_fanout_seconds:p50_5m
        eval_time: 10m
        exp_samples:
          - labels: 'job:agora_feed_fanout_seconds:p50_5m{job="agora-feed"}'
            value: 3
          - labels: 'job:agora_feed_fanout_seconds:p50_5m{job="agora-feed-canary"}'
            value: 1.5
    alert_rule_test:
      - eval_time: 20m
        alertname: AgoraFeedFanoutLatencyP99High
        exp_alerts:
          - exp_labels: {severity: warning, job: agora-feed}
            exp_annotations:
              summary: "agora-feed: fan-out p99 is 4.96s"
              description: The 99th percentile time to fan a status out to its followers' home timelines on agora-feed has been above 3s for 10 minutes (large accounts above AGORA_FEED_LARGE_ACCOUNT_FOLLOWERS are merged at read time and not fanned out).
"""


def prom_test():
    f = os.path.join(WORK, "agora-rules.test.yaml")
    with open(f, "w") as fh:
        fh.write(PROM_TESTS.replace("[RULES]", json.dumps([RULES])))
    r = run([PROMTOOL, "test", "rules", f])
    if r.returncode != 0:
        raise RuntimeError((r.stdout + r.stderr).strip())
    tests = yaml.safe_load(PROM_TESTS)["tests"]
    n_expr = sum(len(t.get("promql_expr_test", [])) for t in tests)
    n_alert = sum(len(t.get("alert_rule_test", [])) for t in tests)
    return f"promtool test rules: {len(tests)} groups, {n_expr} recording-rule and {n_alert} alert cases pass"


check("prometheus rules (deploy/prometheus/agora-rules.yaml)", prom_check)
check("prometheus rule unit tests", prom_test)

# ---------------------------------------------------------------- grafana ---
DASH = os.path.join(ROOT, "deploy", "grafana", "agora-overview.json")


def grafana():
    with open(DASH) as fh:
        d = json.load(fh)
    probs = []
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        if key not in d:
            probs.append(f"missing {key}")
    if d.get("id") not in (None,):
        probs.append("id must be null so the dashboard imports anywhere")
    panels = []
    for p in d.get("panels", []):
        panels.append(p)
        panels.extend(p.get("panels", []))
    ids = [p.get("id") for p in panels]
    if len(ids) != len(set(ids)):
        probs.append("duplicate panel ids")
    exprs = []
    for p in panels:
        g = p.get("gridPos", {})
        if g.get("x", 0) + g.get("w", 0) > 24:
            probs.append(f"panel {p.get('title')!r} exceeds the 24-column grid")
        if p.get("type") == "row":
            continue
        if not p.get("targets"):
            probs.append(f"panel {p.get('title')!r} has no targets")
        for t in p.get("targets", []):
            if not t.get("expr"):
                probs.append(f"panel {p.get('title')!r} target {t.get('refId')} has no expr")
            else:
                exprs.append((p.get("title"), t["expr"]))
            if (t.get("datasource") or p.get("datasource") or {}).get("uid") != "${datasource}":
                probs.append(f"panel {p.get('title')!r} does not use the $datasource variable")
    var_names = {v["name"] for v in d.get("templating", {}).get("list", [])}
    if not {"datasource", "job"} <= var_names:
        probs.append(f"template variables {sorted(var_names)} lack datasource/job")
    joined = "\n".join(e for _, e in exprs)
    for metric in FEED_METRICS + ("agora_http_requests_total", "agora_http_request_duration_seconds_bucket",
                                  "agora_grpc_requests_total", "agora_grpc_request_duration_seconds_bucket",
                                  "agora_outbox_backlog", "agora_consumer_lag"):
        if metric not in joined:
            probs.append(f"no panel queries {metric}")
    if not re.search(r'agora_consumer_lag\{[^}]*group=~"feed', joined):
        probs.append("no panel shows the feed consumer group's lag")
    # Parse every expression with promtool: substitute Grafana's variables and
    # check them as recording rules.
    subst = [("$__rate_interval", "5m"), ("$__interval", "1m"), ("$__range", "1h"), ("${job}", ".+"), ("$job", ".+")]
    rules = []
    for i, (title, e) in enumerate(exprs):
        for a, b in subst:
            e = e.replace(a, b)
        rules.append({"record": f"grafana_panel_{i}", "expr": e, "labels": {"panel": str(title)}})
    f = os.path.join(WORK, "grafana-exprs.rules.yaml")
    with open(f, "w") as fh:
        yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}, fh)
    r = run([PROMTOOL, "check", "rules", f])
    if r.returncode != 0:
        probs.append("PromQL: " + (r.stdout + r.stderr).strip())
    return f"valid JSON, {len(panels)} panels, {len(exprs)} PromQL expressions parse", probs


check("grafana dashboard (deploy/grafana/agora-overview.json)", grafana)

# ---------------------------------------------------------------- compose ---
COMPOSE = os.path.join(ROOT, "deploy", "compose.yaml")


def compose():
    with open(COMPOSE) as fh:
        c = yaml.safe_load(fh)
    probs = []
    services = c.get("services", {})
    for want in ("postgres", "redis", "kafka", "minio", "opensearch", "agora-migrate", "agora-user",
                 "agora-post", "agora-graph", "agora-feed", "agora-notification", "agora-gateway"):
        if want not in services:
            probs.append(f"missing service {want}")
    vols = set((c.get("volumes") or {}).keys())
    cfgs = set((c.get("configs") or {}).keys())
    for name, s in services.items():
        if not s.get("image") and not s.get("build"):
            probs.append(f"{name}: neither image nor build")
        deps = s.get("depends_on", {})
        for dep, cond in (deps.items() if isinstance(deps, dict) else ((x, {}) for x in deps)):
            if dep not in services:
                probs.append(f"{name}: depends_on unknown service {dep}")
            elif cond.get("condition") == "service_healthy" and "healthcheck" not in services[dep]:
                probs.append(f"{name}: waits for {dep} to be healthy, but it has no healthcheck")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0] if isinstance(v, str) else v.get("source")
            if src and not src.startswith((".", "/")) and src not in vols:
                probs.append(f"{name}: volume {src} is not declared")
        for cf in s.get("configs", []):
            src = cf if isinstance(cf, str) else cf.get("source")
            if src not in cfgs:
                probs.append(f"{name}: config {src} is not declared")
        for port in s.get("ports", []):
            if not re.fullmatch(r"(127\.0\.0\.1:)?\d+:\d+", str(port)):
                probs.append(f"{name}: port {port!r} is not HOST:CONTAINER (on 127.0.0.1)")
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        if name.startswith("agora"):
            b = s.get("build", {})
            svc = (b.get("args") or {}).get("SERVICE")
            if not svc or b.get("dockerfile") != "deploy/Dockerfile":
                probs.append(f"{name}: build must use deploy/Dockerfile with a SERVICE arg")
            elif not str(s.get("image", "")).split(":")[0].endswith("/" + svc):
                probs.append(f"{name}: image {s.get('image')} does not match SERVICE={svc}")
            for k in ("AGORA_BUS_URL", "AGORA_PUBLIC_URL", "AGORA_LOG"):
                if k not in env:
                    probs.append(f"{name}: no {k}")
            if name != "agora-migrate":
                short = name.split("-", 1)[1].upper().replace("-", "_")
                for k in (f"AGORA_{short}_LISTEN", f"AGORA_{short}_ADMIN_LISTEN"):
                    if k not in env:
                        probs.append(f"{name}: no {k}")
                if "stop_grace_period" not in s:
                    probs.append(f"{name}: no stop_grace_period for draining")
    mig_env = services.get("agora-migrate", {}).get("environment", {})
    for name, s in services.items():
        for k in (s.get("environment") or {}):
            if k.endswith("_DATABASE_URL") and k not in mig_env:
                probs.append(f"agora-migrate lacks {k} (used by {name})")
    gw = services.get("agora-gateway", {}).get("environment", {})
    for svc, port in (("user", 50051), ("post", 50052), ("graph", 50053), ("feed", 50054),
                      ("notification", 50055)):
        k = f"AGORA_GATEWAY_{svc.upper()}_URL"
        if str(gw.get(k, "")) != f"http://agora-{svc}:{port}":
            probs.append(f"agora-gateway {k}={gw.get(k)!r}")
    # Every http:// service URL names an Agora service and the port it listens on.
    for name, s in services.items():
        for k, v in (s.get("environment") or {}).items():
            m = re.fullmatch(r"http://(agora-[a-z0-9-]+):(\d+)/?", str(v or ""))
            if not (k.startswith("AGORA_") and k.endswith("_URL") and m):
                continue
            target = services.get(m.group(1))
            short = m.group(1).split("-", 1)[1].upper().replace("-", "_")
            listen = str(((target or {}).get("environment") or {}).get(f"AGORA_{short}_LISTEN", ""))
            if not listen.endswith(":" + m.group(2)):
                probs.append(f"{name}: {k}={v} does not match {m.group(1)}'s AGORA_{short}_LISTEN={listen!r}")
    return f"valid YAML, {len(services)} services, references resolve", probs


def compose_scylla():
    with open(COMPOSE) as fh:
        base = yaml.safe_load(fh)
    with open(os.path.join(ROOT, "deploy", "compose.scylla.yaml")) as fh:
        over = yaml.safe_load(fh)
    probs = []
    services = base.get("services", {})
    vols = set((base.get("volumes") or {}).keys()) | set((over.get("volumes") or {}).keys())
    for name, s in over.get("services", {}).items():
        if name not in services and not s.get("image"):
            probs.append(f"{name}: overrides a service compose.yaml lacks")
        for dep in (s.get("depends_on") or {}):
            if dep not in services and dep not in over["services"]:
                probs.append(f"{name}: depends_on unknown service {dep}")
        for v in s.get("volumes", []):
            src = v.split(":", 1)[0]
            if src not in vols:
                probs.append(f"{name}: volume {src} is not declared")
        for k, v in (s.get("environment") or {}).items():
            if k.endswith("_DATABASE_URL") and not re.fullmatch(r"scylla://[a-z0-9.-]+:\d+(,[a-z0-9.-]+:\d+)*/[a-z_][a-z0-9_]*(\?.*)?", str(v)):
                probs.append(f"{name}: {k}={v} is not a scylla://host:port/keyspace URL")
    urls = {k: v for s in over["services"].values() for k, v in (s.get("environment") or {}).items()}
    for k in ("AGORA_GRAPH_DATABASE_URL", "AGORA_FEED_DATABASE_URL", "AGORA_NOTIFICATION_DATABASE_URL"):
        if k not in (over["services"].get("agora-migrate", {}).get("environment") or {}):
            probs.append(f"agora-migrate lacks {k} on ScyllaDB")
        if k not in urls:
            probs.append(f"no ScyllaDB {k}")
    return "override resolves against compose.yaml; graph, feed and notification (and their migrations) on ScyllaDB", probs


check("compose file (deploy/compose.yaml)", compose)
check("compose override (deploy/compose.scylla.yaml)", compose_scylla)

# ------------------------------------------------------------- dockerfile ---
DOCKERFILE = os.path.join(ROOT, "deploy", "Dockerfile")


def dockerfile():
    text = open(DOCKERFILE).read()
    # Join continuation lines.
    logical = re.sub(r"\\\n", " ", text)
    instrs = [l.strip() for l in logical.splitlines() if l.strip() and not l.strip().startswith("#")]
    probs = []
    froms = [l for l in instrs if l.upper().startswith("FROM ")]
    args = {m.group(1): m.group(2) for l in instrs for m in [re.match(r"ARG\s+(\w+)(?:=(\S+))?", l)] if m}
    resolved = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1)) or m.group(0), l) for l in froms]
    if len(froms) < 2:
        probs.append("not multi-stage")
    if not any(re.match(r"FROM rust:1-bookworm AS builder", l, re.I) for l in resolved):
        probs.append("no `FROM rust:1-bookworm AS builder` stage")
    if not re.match(r"FROM debian:bookworm-slim\b", resolved[-1], re.I):
        probs.append(f"runtime stage is {resolved[-1]!r}, want debian:bookworm-slim")
    for pkg in ("cmake", "libcurl4-openssl-dev", "protobuf-compiler", "pkg-config", "libssl-dev", "ca-certificates"):
        if not re.search(rf"\b{re.escape(pkg)}\b", logical):
            probs.append(f"does not install {pkg}")
    if not re.search(r'cargo build --release --locked -p "?\$\{SERVICE\}"?', logical):
        probs.append("no `cargo build --release --locked -p ${SERVICE}`")
    if sum(1 for l in instrs if re.match(r"ARG SERVICE\b", l)) < 2:
        probs.append("ARG SERVICE must be declared in both stages")
    users = [l for l in instrs if l.upper().startswith("USER ")]
    if not users or users[-1].split()[1].split(":")[0] in ("root", "0"):
        probs.append("final USER is not a non-root user")
    if not any(l.upper().startswith("ENTRYPOINT [") for l in instrs):
        probs.append("no exec-form ENTRYPOINT")
    # Every binary the deployment files run must be a workspace package with that binary.
    binaries = {"agora", "agora-user", "agora-post", "agora-graph", "agora-feed", "agora-notification",
                "agora-gateway"}
    cargo = os.path.join(ROOT, "Cargo.toml")
    detail = f"{len(froms)} stages, SERVICE in {sorted(binaries)}"
    if os.path.exists(cargo):
        import tomllib
        pkgs = {}
        for f in glob.glob(os.path.join(ROOT, "crates", "*", "Cargo.toml")):
            with open(f, "rb") as fh:
                t = tomllib.load(fh)
            name = t.get("package", {}).get("name")
            bins = {b.get("name") for b in t.get("bin", [])}
            if os.path.exists(os.path.join(os.path.dirname(f), "src", "main.rs")):
                bins.add(name)
            pkgs[name] = bins
        for b in sorted(binaries):
            if b not in pkgs:
                probs.append(f"workspace has no package {b} (docker build --build-arg SERVICE={b} would fail)")
            elif b not in pkgs[b]:
                probs.append(f"package {b} has no binary {b}")
        if not os.path.exists(os.path.join(ROOT, "Cargo.lock")):
            probs.append("no Cargo.lock: `cargo build --locked` would fail")
        detail += "; workspace packages present"
    else:
        detail += "; no Cargo.toml yet, package check skipped"
    return detail, probs


check("dockerfile (deploy/Dockerfile)", dockerfile)

# ------------------------------------------------------------------ done ---
import shutil  # noqa: E402

shutil.rmtree(WORK, ignore_errors=True)
if failures:
    print(f"FAIL  {len(failures)} check(s) failed: {', '.join(failures)}")
    sys.exit(1)
print("ok    all deployment checks passed")
PY
