#!/usr/bin/env python3
"""Validate rendered ImageSwap manifests, offline.

Run by scripts/check-deploy, with the pinned kubernetes-validate package it
installs; scripts/check-helm.py runs the same checks (check_objects) on each
rendering of the Helm chart. Two kinds of checks on each rendered file (one
per kustomization):

1. Schema: every object (ImageSwap's, and any other application an example
   renders beside it), and the MutatingWebhookConfiguration template held
   in the `imageswap-mwc-template` ConfigMap, against the Kubernetes OpenAPI
   schemas that kubernetes-validate ships, in their strict form (an unknown
   field is an error, as a typo would be silently dropped by the API server).
   A kind without a schema is an error too (the package only warns).
2. Consistency of the objects labelled `app: imageswap`: the things that
   only fail on a real cluster: probes on the serving port, the termination
   grace covering the shutdown grace and the preStop sleep, hardened
   security contexts, mounts where the configured paths point (the registry
   credentials an optional Secret), the webhook
   template pointing at the Service, every container running the release
   image (`--image`), no preStop `sleep` action where the sidecar is a plain
   container (clusters before 1.30, which lack it), a NetworkPolicy that
   admits the sidecar's metrics port too, and RBAC granting exactly the
   rights of the rendering's certificate source: the table "Rights per
   certificate source" of docs/operations.md, read here, so the table and
   the check cannot drift apart (CSR approval rights anywhere but `csr` are
   refused, as is anything the table does not list); and the webhook never
   gating its own restart (issue 22): ImageSwap's pods (and any other pod
   template labelled `app: imageswap-…`, such as the Helm chart's cleanup
   hook) carry the opt-out label IMAGESWAP_DISABLE_LABEL=disabled, the
   Deployment sets a priorityClassName, and the webhook template's
   namespaceSelector excludes kube-system and ImageSwap's namespace
   (`kubernetes.io/metadata.name NotIn`).

Usage: validate-manifests.py --kubernetes-version 1.33 [...] [--image IMAGE] FILE...
Prints one line per problem, and exits 1 if there was any.
"""

import argparse
import json
import posixpath
import re
import sys
from functools import lru_cache
from pathlib import Path

import importlib_resources
import jsonschema
import referencing
import yaml

TEMPLATE_CONFIGMAP = "imageswap-mwc-template"
TEMPLATE_KEY = "imageswap-mwc"
MAPS_CONFIGMAP = "imageswap-maps"
MAPS_KEY = "maps"
ENV_CONFIGMAP = "imageswap-env"
SERVE_CONTAINER = "imageswap"
# The label the API server sets on every namespace (Kubernetes 1.22+).
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
INIT_CONTAINER = "imageswap-init"

# The programs' defaults (docs/configuration.md), for a variable the env
# ConfigMap leaves unset.
DEFAULTS = {
    "IMAGESWAP_LISTEN": "0.0.0.0:5000",
    "IMAGESWAP_TLS_CERT": "/tls/cert.pem",
    "IMAGESWAP_TLS_KEY": "/tls/key.pem",
    "IMAGESWAP_MAPS_FILE": "/app/maps/imageswap-maps.conf",
    "IMAGESWAP_DISABLE_LABEL": "k8s.twr.io/imageswap",
    "IMAGESWAP_REQUEST_TIMEOUT": "2s",
    "IMAGESWAP_SHUTDOWN_GRACE": "20s",
    "IMAGESWAP_SERVICE_NAME": "imageswap",
    "IMAGESWAP_TLS_SECRET_NAME": "imageswap-tls",
    "IMAGESWAP_TLS_CA_SECRET_NAME": "imageswap-tls-ca",
    "IMAGESWAP_MWC_NAME": "imageswap-webhook",
    "IMAGESWAP_WEBHOOK_NAME": "imageswap.webhook.k8s.twr.io",
    "IMAGESWAP_MWC_TEMPLATE": "/mwc/imageswap-mwc.yaml",
    "IMAGESWAP_TLS_DIR": "/tls",
    "IMAGESWAP_CSR_SIGNER_NAME": "kubernetes.io/kubelet-serving",
    "IMAGESWAP_REGISTRY_CONFIG": "/etc/imageswap/registry/.dockerconfigjson",
    "IMAGESWAP_SHUTDOWN_DELAY": "0s",
}

OPERATIONS_MD = Path(__file__).resolve().parent.parent / "docs/operations.md"
RIGHTS_HEADING = "## Rights per certificate source"
RIGHTS_SECTION = RIGHTS_HEADING.lstrip("# ")
CERT_SOURCES = ("self-signed", "csr", "byoc")
# A row of the rights table for IMAGESWAP_PROJECT_PULL_SECRETS=on (any
# certificate source), not for a certificate source.
PROJECTION = "projection"

DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, message):
        self.lines.append(f"{where}: {message}")


def parse_duration(text):
    """Seconds in a humantime duration such as `20s` or `1m 30s`."""
    parts = re.findall(r"(\d+)\s*([a-z]+)", text.strip())
    if not parts or re.sub(r"\s+", "", text) != "".join(n + u for n, u in parts):
        raise ValueError(f"not a duration: {text!r}")
    total = 0.0
    for number, unit in parts:
        if unit not in DURATION_UNITS:
            raise ValueError(f"unknown unit {unit!r} in {text!r}")
        total += int(number) * DURATION_UNITS[unit]
    return total


# --- schemas -------------------------------------------------------------------

@lru_cache(maxsize=None)
def schema_dir(version):
    root = importlib_resources.files("kubernetes_validate").joinpath("kubernetes-json-schema")
    wanted = f"v{version}.0-local-strict"
    path = root.joinpath(wanted)
    if not path.is_dir():
        shipped = sorted(p.name for p in root.iterdir() if p.name.endswith("-local-strict"))
        raise SystemExit(f"kubernetes-validate ships no schemas for Kubernetes {version}: {shipped}")
    return path


@lru_cache(maxsize=None)
def registry(version):
    definitions = json.loads(schema_dir(version).joinpath("_definitions.json").read_text())
    return referencing.Resource.from_contents(definitions) @ referencing.Registry()


@lru_cache(maxsize=None)
def validator(version, api_version, kind):
    # rbac.authorization.k8s.io/v1 -> rbac-v1, as kubernetes-validate names files.
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = schema_dir(version).joinpath(f"{kind.lower()}-{group_version}.json")
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    return jsonschema.validators.Draft202012Validator(schema, registry=registry(version))


def check_schema(obj, where, versions, problems):
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        problems.add(where, "no apiVersion or kind")
        return
    for version in versions:
        v = validator(version, api_version, kind)
        if v is None:
            problems.add(where, f"no schema for {kind} {api_version} in Kubernetes {version}")
            continue
        for error in sorted(v.iter_errors(obj), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.path) or "(top)"
            problems.add(where, f"Kubernetes {version} schema: {path}: {error.message}")


# --- consistency ---------------------------------------------------------------

def name_of(obj):
    return f"{obj.get('kind')}/{obj.get('metadata', {}).get('name')}"


def find(objects, kind, name=None):
    found = [o for o in objects if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]
    return found[0] if len(found) == 1 else None


def check_consistency(objects, template, file, problems, maps_configmap=(MAPS_CONFIGMAP, MAPS_KEY), maps_external=False,
                      image=None):
    """`maps_configmap` is the (name, key) the maps file must come from;
    `maps_external`: that ConfigMap is the user's, not in the render (the
    Helm chart's maps.existingConfigMap); `image`: the release image every
    container must run (None: not checked)."""
    def bad(what, message):
        problems.add(f"{file}: {what}", message)

    deploy = find(objects, "Deployment")
    env_cm = find(objects, "ConfigMap", ENV_CONFIGMAP)
    service = find(objects, "Service")
    if deploy is None or env_cm is None or service is None:
        bad("objects", "expected exactly one Deployment, Service and ConfigMap imageswap-env")
        return
    env = dict(DEFAULTS)
    env.update(env_cm.get("data") or {})
    namespace = deploy["metadata"].get("namespace")

    for obj in objects:
        scoped = obj["kind"] not in {"Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration"}
        if scoped and obj["metadata"].get("namespace") != namespace:
            bad(name_of(obj), f"namespace is {obj['metadata'].get('namespace')!r}, the Deployment's is {namespace!r}")

    pod = deploy["spec"]["template"]
    spec = pod["spec"]
    containers = {c["name"]: c for c in spec.get("containers", []) + spec.get("initContainers", [])}
    serve, init = containers.get(SERVE_CONTAINER), containers.get(INIT_CONTAINER)
    if serve is None or init is None:
        bad("Deployment", f"expected containers {SERVE_CONTAINER!r} and init container {INIT_CONTAINER!r}")
        return
    if serve.get("image") != init.get("image"):
        bad("Deployment", "serve and init must run the same image")
    # Every container (the plain-sidecar watch container too: a patch's
    # `image:` is not reached by kustomize's `images:` rule when the
    # container is new) runs the release image, not a name no registry has.
    if image is not None:
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            if c.get("image") != image:
                bad(f"container {c['name']}", f"runs image {c.get('image')!r}, not the release image {image!r}")
    native = init.get("restartPolicy") == "Always"
    if serve.get("args") != ["serve"] or init.get("args") not in (["init"], ["init", "--watch"]):
        bad("Deployment", "containers must run `imageswap serve` and `imageswap init` (or `init --watch`)")
    # `init --watch` as a native sidecar: its startup probe on the watch
    # listener holds the server back until the pair is written.
    if init.get("args") == ["init", "--watch"] and init in spec.get("initContainers", []):
        if init.get("restartPolicy") != "Always":
            bad(f"container {INIT_CONTAINER}", "`init --watch` as an init container must be a native sidecar (restartPolicy: Always)")
        try:
            watch_port = int(env.get("IMAGESWAP_WATCH_LISTEN", "").rsplit(":", 1)[1])
        except (IndexError, ValueError):
            watch_port = None
        init_ports = {p.get("name"): p["containerPort"] for p in init.get("ports", [])}
        get = init.get("startupProbe", {}).get("httpGet", {})
        if watch_port is None or init_ports.get(get.get("port"), get.get("port")) != watch_port or get.get("path") != "/readyz":
            bad(f"container {INIT_CONTAINER}", "the native sidecar needs a startupProbe GET /readyz on IMAGESWAP_WATCH_LISTEN's port")

    # Pod selection: Service and PDB select the pods, the HPA scales this Deployment.
    labels = pod["metadata"].get("labels", {})
    # The webhook never gates its own restart (issue 22): ImageSwap's pods
    # carry the opt-out label, so the objectSelector never sends them, even
    # in a labelled namespace; and they are scheduled and evicted like the
    # cluster's critical add-ons, since every pod it gates waits for them.
    if labels.get(env["IMAGESWAP_DISABLE_LABEL"]) != "disabled":
        bad("Deployment", f"pod template must carry the opt-out label {env['IMAGESWAP_DISABLE_LABEL']}: disabled "
            "(IMAGESWAP_DISABLE_LABEL), or a labelled namespace makes the webhook gate its own restart")
    if not spec.get("priorityClassName"):
        bad("Deployment", "pod template must set a priorityClassName (docs/operations.md, \"Priority class\")")
    for obj in objects:
        selector = (obj.get("spec") or {}).get("selector")
        if obj["kind"] == "Service":
            selector = {"matchLabels": selector}
        if obj["kind"] in {"Service", "PodDisruptionBudget"}:
            if any(labels.get(k) != v for k, v in (selector or {}).get("matchLabels", {}).items()):
                bad(name_of(obj), "selector does not select the Deployment's pods")
    hpa = find(objects, "HorizontalPodAutoscaler")
    if hpa and hpa["spec"]["scaleTargetRef"]["name"] != deploy["metadata"]["name"]:
        bad(name_of(hpa), "does not scale the Deployment")

    # Configuration reaches both containers.
    for c in (serve, init):
        refs = [e.get("configMapRef", {}).get("name") for e in c.get("envFrom", [])]
        if ENV_CONFIGMAP not in refs:
            bad(f"container {c['name']}", f"does not read ConfigMap {ENV_CONFIGMAP} with envFrom")
        from_field = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in c.get("env", [])}
        if from_field.get("IMAGESWAP_POD_NAME") != "metadata.name" or from_field.get("IMAGESWAP_NAMESPACE_NAME") != "metadata.namespace":
            bad(f"container {c['name']}", "IMAGESWAP_POD_NAME/IMAGESWAP_NAMESPACE_NAME must come from the downward API")

    # Security: what the restricted Pod Security Standard and the issue ask.
    pod_sc = spec.get("securityContext", {})
    if pod_sc.get("runAsNonRoot") is not True or pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        bad("Deployment", "pod must set runAsNonRoot and seccomp RuntimeDefault")
    for c in containers.values():
        sc = c.get("securityContext", {})
        if (sc.get("allowPrivilegeEscalation") is not False or sc.get("readOnlyRootFilesystem") is not True
                or sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("privileged")):
            bad(f"container {c['name']}", "must drop ALL capabilities, forbid privilege escalation and mount / read-only")
        res = c.get("resources", {})
        if not res.get("requests", {}).get("cpu") or not res.get("requests", {}).get("memory") or not res.get("limits", {}).get("memory"):
            bad(f"container {c['name']}", "must set cpu and memory requests and a memory limit")
    if spec.get("automountServiceAccountToken") is not False:
        bad("Deployment", "the serving container must not get an API token (automountServiceAccountToken: false)")
    token_mounts = [m for m in init.get("volumeMounts", []) if m["mountPath"] == "/var/run/secrets/kubernetes.io/serviceaccount"]
    if len(token_mounts) != 1:
        bad(f"container {INIT_CONTAINER}", "needs the projected service account token volume")

    # The serving port: listen address, container port, probes, Service.
    try:
        port = int(env["IMAGESWAP_LISTEN"].rsplit(":", 1)[1])
    except (IndexError, ValueError):
        bad("imageswap-env", f"IMAGESWAP_LISTEN {env['IMAGESWAP_LISTEN']!r} is not host:port")
        return
    ports = {p.get("name"): p["containerPort"] for p in serve.get("ports", [])}
    if port not in ports.values():
        bad(f"container {SERVE_CONTAINER}", f"does not expose IMAGESWAP_LISTEN's port {port}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = serve.get(probe, {}).get("httpGet", {})
        probe_port = ports.get(get.get("port"), get.get("port"))
        if get.get("path") != path or get.get("scheme") != "HTTPS" or probe_port != port:
            bad(f"container {SERVE_CONTAINER}", f"{probe} must be HTTPS GET {path} on port {port}")
    for p in service["spec"]["ports"]:
        target = ports.get(p.get("targetPort"), p.get("targetPort"))
        if target != port:
            bad(name_of(service), f"port {p['port']} targets {p.get('targetPort')!r}, not the serving port {port}")
    # A NetworkPolicy (deploy/overlays/network-policy) selects these pods and
    # admits each source it lists on the serving port, or the API server's
    # webhook calls are dropped.
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        match = (policy["spec"].get("podSelector") or {}).get("matchLabels", {})
        if not match or any(labels.get(k) != v for k, v in match.items()):
            bad(name_of(policy), "podSelector does not select the Deployment's pods")
        for index, rule in enumerate(policy["spec"].get("ingress", [])):
            rule_ports = [ports.get(p.get("port"), p.get("port")) for p in rule.get("ports", [])]
            if rule_ports and port not in rule_ports:
                bad(name_of(policy), f"ingress rule {index} does not admit the serving port {port}")
        # The sidecar's /metrics (IMAGESWAP_WATCH_LISTEN), which
        # docs/operations.md says to scrape: admitted by some rule.
        try:
            watch_port = int(env.get("IMAGESWAP_WATCH_LISTEN", "").rsplit(":", 1)[1])
        except (IndexError, ValueError):
            watch_port = None
        admitted = [p.get("port") for rule in policy["spec"].get("ingress", []) for p in rule.get("ports", [])]
        if watch_port is not None and watch_port not in admitted and "watch" not in admitted:
            bad(name_of(policy), f"no ingress rule admits the sidecar's metrics port {watch_port} (IMAGESWAP_WATCH_LISTEN)")

    # Shutdown: the kubelet's SIGKILL must come after the preStop sleep plus
    # the server's own grace period.
    try:
        grace = parse_duration(env["IMAGESWAP_SHUTDOWN_GRACE"])
    except ValueError as e:
        bad("imageswap-env", f"IMAGESWAP_SHUTDOWN_GRACE: {e}")
        grace = None
    pre_stop_hook = serve.get("lifecycle", {}).get("preStop", {})
    pre_stop = pre_stop_hook.get("sleep", {}).get("seconds", 0)
    # The `sleep` action needs Kubernetes 1.30 (beta, on by default); a
    # rendering without the native sidecar is for clusters before 1.30. The
    # image is distroless (no `sleep` binary for an exec hook), so there the
    # server's own IMAGESWAP_SHUTDOWN_DELAY keeps it serving instead.
    if not native and "sleep" in pre_stop_hook:
        bad(f"container {SERVE_CONTAINER}", "the preStop `sleep` action needs Kubernetes 1.30; a rendering for clusters "
            "before 1.30 (no native sidecar) must use IMAGESWAP_SHUTDOWN_DELAY instead")
    if "exec" in pre_stop_hook:
        bad(f"container {SERVE_CONTAINER}", "a preStop exec hook cannot run in the distroless image (no shell, no sleep)")
    try:
        delay = parse_duration(env.get("IMAGESWAP_SHUTDOWN_DELAY", "0s"))
    except ValueError as e:
        bad("imageswap-env", f"IMAGESWAP_SHUTDOWN_DELAY: {e}")
        delay = 0
    termination = spec.get("terminationGracePeriodSeconds", 30)
    if grace is not None and termination <= grace + pre_stop + delay:
        bad("Deployment", f"terminationGracePeriodSeconds {termination} must exceed the shutdown grace {grace:g}s plus the "
            f"preStop sleep {pre_stop}s plus IMAGESWAP_SHUTDOWN_DELAY {delay:g}s")

    # Mounts: the configured paths land in the right volumes.
    volumes = {v["name"]: v for v in spec.get("volumes", [])}

    def mount_for(container, path):
        """The volume holding `path` and the path inside it."""
        best = None
        for m in container.get("volumeMounts", []):
            root = m["mountPath"].rstrip("/")
            if path == root or path.startswith(root + "/"):
                if best is None or len(root) > len(best[1]):
                    best = (m, root)
        if best is None:
            return None, None
        return volumes.get(best[0]["name"]), posixpath.relpath(path, best[1])

    def configmap_key(volume, inner):
        cm = (volume or {}).get("configMap")
        if cm is None:
            return None, None
        for item in cm.get("items", []):
            if item["path"] == inner:
                return cm["name"], item["key"]
        return cm["name"], (inner if not cm.get("items") else None)

    for var, container, cm_name, key in (
        ("IMAGESWAP_MAPS_FILE", serve, *maps_configmap),
        ("IMAGESWAP_MWC_TEMPLATE", init, TEMPLATE_CONFIGMAP, TEMPLATE_KEY),
    ):
        volume, inner = mount_for(container, env[var])
        if volume is None:
            bad(f"container {container['name']}", f"{var} {env[var]} is on no volume")
        elif configmap_key(volume, inner) != (cm_name, key):
            bad(f"container {container['name']}", f"{var} {env[var]} is not key {key!r} of ConfigMap {cm_name}")
        elif any(m.get("subPath") for m in container.get("volumeMounts", []) if volumes.get(m["name"]) is volume):
            bad(f"container {container['name']}", f"{var} is mounted with subPath, which never sees ConfigMap updates")
    for var in ("IMAGESWAP_TLS_CERT", "IMAGESWAP_TLS_KEY"):
        volume, inner = mount_for(serve, env[var])
        if volume is None or "emptyDir" not in volume or posixpath.dirname(env[var]) != env["IMAGESWAP_TLS_DIR"]:
            bad(f"container {SERVE_CONTAINER}", f"{var} {env[var]} must be in IMAGESWAP_TLS_DIR on the emptyDir the init container writes")
        init_volume, _ = mount_for(init, env["IMAGESWAP_TLS_DIR"])
        if init_volume is not volume:
            bad(f"container {INIT_CONTAINER}", f"IMAGESWAP_TLS_DIR {env['IMAGESWAP_TLS_DIR']} is not the volume the server reads {var} from")
    # Mirror verification (docs/verify.md): the credentials file, when the
    # server mounts anything there, is the `.dockerconfigjson` key of a
    # Secret mounted as a directory and optional (no Secret: anonymous, and
    # the pod must still start); the CA bundle, when set, is on a volume.
    volume, inner = mount_for(serve, env["IMAGESWAP_REGISTRY_CONFIG"])
    if volume is not None:
        secret = volume.get("secret")
        items = {i["path"]: i["key"] for i in (secret or {}).get("items", [])}
        if secret is None or items.get(inner, inner if not items else None) != ".dockerconfigjson":
            bad(f"container {SERVE_CONTAINER}", f"IMAGESWAP_REGISTRY_CONFIG {env['IMAGESWAP_REGISTRY_CONFIG']} is not key .dockerconfigjson of a Secret")
        elif secret.get("optional") is not True and find(objects, "Secret", secret["secretName"]) is None:
            bad(f"container {SERVE_CONTAINER}", f"the registry credentials Secret {secret['secretName']} is neither rendered nor optional: the pod would not start without it")
        elif any(m.get("subPath") for m in serve.get("volumeMounts", []) if volumes.get(m["name"]) is volume):
            bad(f"container {SERVE_CONTAINER}", "IMAGESWAP_REGISTRY_CONFIG is mounted with subPath, which never sees Secret updates")
    if "IMAGESWAP_REGISTRY_CA" in env:
        volume, inner = mount_for(serve, env["IMAGESWAP_REGISTRY_CA"])
        if volume is None:
            bad(f"container {SERVE_CONTAINER}", f"IMAGESWAP_REGISTRY_CA {env['IMAGESWAP_REGISTRY_CA']} is on no volume")
        elif "configMap" in volume and configmap_key(volume, inner)[1] is None:
            bad(f"container {SERVE_CONTAINER}", f"IMAGESWAP_REGISTRY_CA {env['IMAGESWAP_REGISTRY_CA']} is no key of ConfigMap {volume['configMap']['name']}")
    if env.get("IMAGESWAP_VERIFY", "off").lower() in ("on", "true"):
        try:
            if parse_duration(env.get("IMAGESWAP_VERIFY_TIMEOUT", "1s")) >= parse_duration(env["IMAGESWAP_REQUEST_TIMEOUT"]):
                bad("imageswap-env", "IMAGESWAP_VERIFY_TIMEOUT must be below IMAGESWAP_REQUEST_TIMEOUT")
        except ValueError as e:
            bad("imageswap-env", f"IMAGESWAP_VERIFY_TIMEOUT: {e}")

    rendered_configmaps = [(TEMPLATE_CONFIGMAP, TEMPLATE_KEY)] + ([] if maps_external else [maps_configmap])
    for cm_name, key in rendered_configmaps:
        cm = find(objects, "ConfigMap", cm_name)
        if cm is None or key not in (cm.get("data") or {}):
            bad(f"ConfigMap/{cm_name}", f"missing, or without key {key!r}")

    # RBAC: exactly the rights of the rendering's certificate source, as
    # docs/operations.md's table lists them, naming what `imageswap init` is
    # configured to touch.
    check_rights(objects, env, bad)

    # The webhook template: the webhook `init` fills in, calling this Service.
    if template is None:
        return
    hooks = {w["name"]: w for w in template.get("webhooks", [])}
    hook = hooks.get(env["IMAGESWAP_WEBHOOK_NAME"])
    if template["metadata"]["name"] != env["IMAGESWAP_MWC_NAME"] or hook is None:
        bad("MWC template", f"must be {env['IMAGESWAP_MWC_NAME']} with webhook {env['IMAGESWAP_WEBHOOK_NAME']}")
        return
    svc = hook.get("clientConfig", {}).get("service", {})
    if (svc.get("name"), svc.get("namespace")) != (service["metadata"]["name"], namespace) or service["metadata"]["name"] != env["IMAGESWAP_SERVICE_NAME"]:
        bad("MWC template", f"must call Service {env['IMAGESWAP_SERVICE_NAME']} in {namespace}")
    if svc.get("port", 443) not in [p["port"] for p in service["spec"]["ports"]]:
        bad("MWC template", f"calls port {svc.get('port', 443)}, which the Service does not have")
    if svc.get("path") not in ("/", "/mutate"):
        bad("MWC template", "must call POST / (or /mutate)")
    if "caBundle" in hook.get("clientConfig", {}):
        bad("MWC template", "caBundle is filled in by `imageswap init`; leave it out")
    if "v1" not in hook.get("admissionReviewVersions", []) or hook.get("sideEffects") != "None":
        bad("MWC template", "needs admissionReviewVersions [v1] and sideEffects None")
    if hook.get("reinvocationPolicy") != "IfNeeded":
        bad("MWC template", "needs reinvocationPolicy IfNeeded")
    if hook.get("failurePolicy") not in ("Fail", "Ignore"):
        bad("MWC template", "set failurePolicy explicitly")
    try:
        if hook.get("timeoutSeconds", 10) <= parse_duration(env["IMAGESWAP_REQUEST_TIMEOUT"]):
            bad("MWC template", "timeoutSeconds must exceed IMAGESWAP_REQUEST_TIMEOUT, so the server's 503 arrives first")
    except ValueError as e:
        bad("imageswap-env", f"IMAGESWAP_REQUEST_TIMEOUT: {e}")
    resources = {r for rule in hook.get("rules", []) for r in rule.get("resources", [])}
    if not {"pods", "pods/ephemeralcontainers"} <= resources:
        bad("MWC template", "rules must cover pods and pods/ephemeralcontainers")
    # The opt-in label, or any other selector (docs/advanced-install.md): never
    # none, which would send ImageSwap's own pods to ImageSwap.
    selector = hook.get("namespaceSelector") or {}
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        bad("MWC template", "needs a namespaceSelector (the default: k8s.twr.io/imageswap: enabled)")
    # kube-system and ImageSwap's own namespace are never selected, whatever
    # the rest of the selector (an opt-out one included).
    excluded = set()
    for expr in selector.get("matchExpressions") or []:
        if expr.get("key") == NAMESPACE_NAME_LABEL and expr.get("operator") == "NotIn":
            excluded |= set(expr.get("values") or [])
    missing = {"kube-system", namespace} - excluded
    if missing:
        bad("MWC template", f"namespaceSelector must exclude {', '.join(sorted(missing))} "
            f"({NAMESPACE_NAME_LABEL} NotIn [kube-system, {namespace}])")
    for expr in hook.get("objectSelector", {}).get("matchExpressions", []):
        if expr.get("values") == ["disabled"] and expr.get("key") != env["IMAGESWAP_DISABLE_LABEL"]:
            bad("MWC template", f"objectSelector key {expr.get('key')} differs from IMAGESWAP_DISABLE_LABEL")

    sa = spec.get("serviceAccountName")
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and s.get("namespace") == namespace
                   for s in binding.get("subjects", [])):
            bad(name_of(binding), f"does not bind ServiceAccount {namespace}/{sa}")


# --- rights per certificate source -----------------------------------------------

def cert_source(env):
    """The certificate source `imageswap init` runs with: the variable, else
    the program's default (self-signed; csr when IMAGESWAP_DISABLE_AUTO_MWC
    is set, whose caBundle the operator keeps)."""
    source = env.get("IMAGESWAP_CERT_SOURCE")
    if source:
        return source.lower()
    return "csr" if auto_mwc_disabled(env) else "self-signed"


def auto_mwc_disabled(env):
    return str(env.get("IMAGESWAP_DISABLE_AUTO_MWC", "false")).lower() == "true"


@lru_cache(maxsize=None)
def rights_table(path=OPERATIONS_MD):
    """The rows of docs/operations.md's "Rights per certificate source":
    (kind, API group, resource, name or None for any, verb, sources, why)."""
    text = Path(path).read_text()
    if RIGHTS_HEADING not in text:
        raise SystemExit(f"{path}: no section {RIGHTS_HEADING!r}")
    section = text.split(RIGHTS_HEADING, 1)[1]
    rows = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| kind"):
            continue
        cells = [c.strip().replace("`", "") for c in line.strip().strip("|").split("|")]
        if len(cells) != 7:
            raise SystemExit(f"{path}: a row of {RIGHTS_HEADING!r} needs 7 cells: {line}")
        kind, group, resource, name, verbs, sources, why = cells
        sources = CERT_SOURCES if sources == "all" else tuple(s.strip() for s in sources.split(","))
        unknown = set(sources) - set(CERT_SOURCES) - {PROJECTION}
        if unknown or kind not in ("Role", "ClusterRole"):
            raise SystemExit(f"{path}: bad row of {RIGHTS_HEADING!r}: {line}")
        for verb in verbs.split(","):
            rows.append((kind, "" if group == "core" else group, resource,
                         None if name in ("–", "-", "any") else name, verb.strip(), sources, why))
    if not rows:
        raise SystemExit(f"{path}: {RIGHTS_HEADING!r} has no rows")
    return tuple(rows)


def projection_on(env):
    return str(env.get("IMAGESWAP_PROJECT_PULL_SECRETS", "off")).lower() in ("on", "true")


def needed_rights(env):
    """The rights one rendering needs: (kind, group, resource, verb, name).
    The `projection` rows only with IMAGESWAP_PROJECT_PULL_SECRETS=on."""
    source = cert_source(env)
    projection = projection_on(env)

    def resolve(name):
        # IMAGESWAP_TLS_SECRET_NAME-self-signed-ca: the variable, then a suffix.
        match = re.fullmatch(r"(IMAGESWAP_[A-Z_]+)(.*)", name or "")
        return env.get(match.group(1), "") + match.group(2) if match else name

    needs = []
    for kind, group, resource, name, verb, sources, _ in rights_table():
        if source not in sources and not (projection and PROJECTION in sources):
            continue
        # Without auto-MWC, init never touches the webhook configuration.
        if resource == "mutatingwebhookconfigurations" and auto_mwc_disabled(env):
            continue
        needs.append((kind, group, resource, verb, resolve(name)))
    return source, needs


def check_rights(objects, env, bad):
    source, needs = needed_rights(env)
    if source not in CERT_SOURCES:
        bad("imageswap-env", f"IMAGESWAP_CERT_SOURCE {source!r} is none of {', '.join(CERT_SOURCES)}")
        return

    def allowed(kind, group, resource, verb, name):
        for role in objects:
            if role["kind"] != kind:
                continue
            for rule in role.get("rules") or []:
                if (group in rule.get("apiGroups", []) and resource in rule.get("resources", [])
                        and verb in rule.get("verbs", [])
                        and (not rule.get("resourceNames") or name in rule["resourceNames"])):
                    return True
        return False

    for kind, group, resource, verb, name in needs:
        if not allowed(kind, group, resource, verb, name):
            bad("RBAC", f"no {kind} allows {verb} on {resource} {name or ''}".rstrip()
                + f" (IMAGESWAP_CERT_SOURCE {source} needs it: docs/operations.md, {RIGHTS_SECTION!r})")
    # Nothing beyond: every verb of every rule on every resource (and name)
    # it covers must be a needed right; a rule without resourceNames only
    # matches a row for any name.
    for role in (o for o in objects if o["kind"] in ("Role", "ClusterRole")):
        for rule in role.get("rules") or []:
            names = rule.get("resourceNames") or [None]
            for group in rule.get("apiGroups", []):
                for resource in rule.get("resources", []):
                    for verb in rule.get("verbs", []):
                        for name in names:
                            if (role["kind"], group, resource, verb, name) in needs:
                                continue
                            what = f"{verb} on {resource}" + (f" {name}" if name else " (any name)")
                            if role["kind"] == "ClusterRole" and resource in ("secrets", "namespaces", "events"):
                                bad(name_of(role), f"grants {what} cluster-wide, which only "
                                    "IMAGESWAP_PROJECT_PULL_SECRETS=on needs (add it with "
                                    "deploy/components/pull-secret-projection or "
                                    "config.IMAGESWAP_PROJECT_PULL_SECRETS=on in the chart)")
                            elif resource.startswith("certificatesigningrequests") or resource == "signers":
                                bad(name_of(role), f"grants {what}: CSR rights in a rendering whose certificate source is "
                                    f"{source}, not csr (add them with deploy/components/csr or config.IMAGESWAP_CERT_SOURCE=csr in the chart)")
                            else:
                                bad(name_of(role), f"grants {what}, which IMAGESWAP_CERT_SOURCE {source} does not need "
                                    f"(docs/operations.md, {RIGHTS_SECTION!r})")


def check_objects(objects, file, versions, problems, **consistency):
    """Both kinds of checks on the objects of one render; returns how many
    objects were schema-checked. `consistency` goes to check_consistency
    (scripts/check-helm.py passes the Helm chart's maps ConfigMap)."""
    count = 0
    template = None
    for obj in objects:
        check_schema(obj, f"{file}: {name_of(obj)}", versions, problems)
        count += 1
        if obj.get("kind") == "ConfigMap" and obj["metadata"]["name"] == TEMPLATE_CONFIGMAP:
            text = (obj.get("data") or {}).get(TEMPLATE_KEY, "")
            try:
                template = yaml.safe_load(text)
            except yaml.YAMLError as e:
                problems.add(f"{file}: MWC template", f"not YAML: {e}")
                continue
            if not isinstance(template, dict) or template.get("kind") != "MutatingWebhookConfiguration":
                problems.add(f"{file}: MWC template", "is not a MutatingWebhookConfiguration")
                template = None
                continue
            check_schema(template, f"{file}: MWC template", versions, problems)
            count += 1
    # Other applications rendered beside ImageSwap (the Jaeger of
    # deploy/observability/jaeger, the Helm chart's cleanup hook) get the
    # schema check only.
    ours = [o for o in objects if (o.get("metadata", {}).get("labels") or {}).get("app") == "imageswap"]
    # Every other pod ImageSwap runs (the Helm chart's cleanup hook, which
    # runs while the webhook still exists) carries the opt-out label too.
    env_cm = find(ours, "ConfigMap", ENV_CONFIGMAP)
    disable_label = ((env_cm or {}).get("data") or {}).get("IMAGESWAP_DISABLE_LABEL", DEFAULTS["IMAGESWAP_DISABLE_LABEL"])
    for obj in objects:
        app = str((obj.get("metadata", {}).get("labels") or {}).get("app", ""))
        pod_template = (obj.get("spec") or {}).get("template") or {}
        if app.startswith("imageswap-") and "spec" in pod_template:
            if (pod_template.get("metadata", {}).get("labels") or {}).get(disable_label) != "disabled":
                problems.add(f"{file}: {name_of(obj)}", f"pod template must carry the opt-out label {disable_label}: disabled")
    check_consistency(ours, template, file, problems, **consistency)
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes-version", action="append", required=True, dest="versions")
    parser.add_argument("--image", help="the release image every ImageSwap container must run")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    problems = Problems()
    count = 0
    for file in args.files:
        with open(file) as f:
            objects = [o for o in yaml.safe_load_all(f) if o]
        count += check_objects(objects, file, args.versions, problems, image=args.image)
    for line in problems.lines:
        print(line)
    print(f"{count} objects in {len(args.files)} renders against Kubernetes {', '.join(args.versions)}: "
          f"{len(problems.lines)} problems")
    return 1 if problems.lines else 0


if __name__ == "__main__":
    sys.exit(main())
