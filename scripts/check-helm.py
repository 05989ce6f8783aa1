#!/usr/bin/env python3
"""Check the Helm chart deploy/helm/imageswap with the real Helm engine, offline.

Run by scripts/check-deploy, with the pinned helm-python-sdk (Helm v4's Go
library, libhelm_c, behind a Python API: no `helm` binary) and
kubernetes-validate that it installs. Each check prints one line, and every
problem one more; the exit status is 1 if there was any.

1. lint: `helm lint --strict` of the chart, with the defaults and with each
   value set below, for the Kubernetes versions given;
2. render: the defaults and each value set, every object validated against
   the strict Kubernetes schemas and for consistency, exactly as the
   kustomize trees are (scripts/validate-manifests.py);
3. the same objects: the default rendering against the kustomize base
   (deploy/manifests, rendered by check-deploy), object by object, allowing
   only the differences the chart's README lists;
4. the webhook: no MutatingWebhookConfiguration from `helm install` (the init
   container makes it), a pre-delete hook that deletes exactly that one, and
   with webhook.createByHelm the chart's own object instead; its
   matchConditions are webhook.matchConditions then one per
   webhook.excludeSelectors entry, and for the selectors of
   tests/fixtures/helm/exclude-selectors.yaml exactly the conditions written
   there (which the test deploy::exclude_selectors evaluates with CEL);
5. refused: bad values are rejected (and the chart's kubeVersion admits
   the clusters nativeSidecar=false is for), by values.schema.json or by the chart's
   cross-checks, each with a message naming the value;
6. every setting: each variable of the base's env ConfigMap and of
   docs/configuration.md is a key of values.yaml's `config`;
7. the values table of the chart's README is current (scripts/helm-values-table);
8. package: `helm package` makes an archive that renders the same objects.

Usage: check-helm.py --kubernetes-version 1.33 [...] --base RENDERED_BASE.yaml --out DIR
"""

import argparse
import copy
import hashlib
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy/helm/imageswap"
RELEASE = "imageswap"
NAMESPACE = "imageswap-system"
HOOK = "helm.sh/hook"
CHECKSUM = "checksum/config"

spec = importlib.util.spec_from_file_location("validate_manifests", ROOT / "scripts/validate-manifests.py")
vm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(vm)

TEST_PEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"
CA_BUNDLE = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJ0ZXN0Ci0tLS0tRU5EIENFUlRJRklDQVRFLS0tLS0K"

# Value sets rendered beside the defaults: (name, values, namespace, options).
# `maps` names the ConfigMap the maps file must come from when it is the user's.
# webhook.matchConditions of the operator's own (a CloudNativePG exclusion).
OWN_CONDITIONS = [
    {"name": "exclude-cnpg", "expression": "!has(object.metadata.labels) || !('cnpg.io/cluster' in object.metadata.labels)"},
]

# webhook.excludeSelectors and the conditions the chart must render for them.
EXCLUDE_FIXTURE = ROOT / "tests/fixtures/helm/exclude-selectors.yaml"

VALUE_SETS = [
    ("production", {
        "autoscaling": {"minReplicas": 3, "maxReplicas": 10},
        "podDisruptionBudget": {"minAvailable": 2},
        "resources": {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}},
        "priorityClassName": "system-cluster-critical",
        "image": {"repository": "registry.example.com/imageswap",
                  "digest": "sha256:" + "ab" * 32},
        "imagePullSecrets": ["registry-example-com"],
        "config": {
            "IMAGESWAP_LOG_FORMAT": "json",
            "IMAGESWAP_METRICS_LISTEN": "0.0.0.0:9090",
            "IMAGESWAP_MAX_BODY_BYTES": 4194304,
            "IMAGESWAP_CACHE_CAPACITY": "50000",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger-collector.observability:4318",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": 0.1,
            "OTEL_RESOURCE_ATTRIBUTES": "k8s.cluster.name=eu-1",
        },
        "extraEnv": [{"name": "OTEL_EXPORTER_OTLP_HEADERS",
                      "valueFrom": {"secretKeyRef": {"name": "otlp-auth", "key": "headers"}}}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "serviceAccount": {"annotations": {"example.com/role": "imageswap"}},
    }, NAMESPACE, {}),
    ("network-policy", {
        "networkPolicy": {"enabled": True, "controlPlaneCIDRs": ["172.18.0.2/32", "10.0.0.0/24"]},
        "config": {"IMAGESWAP_METRICS_LISTEN": "0.0.0.0:9090"},
    }, NAMESPACE, {}),
    # Mirror verification on, with everything the chart can create: the
    # credentials Secret from a map, the CA bundle from PEM text, plain-HTTP
    # hosts, pull secrets for two registries.
    ("verify", {
        "verify": {
            "enabled": True, "onError": "keep", "timeout": "500ms", "ttl": "5m", "missingTtl": "1m",
            "staleIfError": "2h", "platforms": ["linux/amd64", "linux/arm64"],
            "registryCredentials": {
                "secretName": "mirror-credentials",
                "dockerConfigJson": '{"auths": {"harbor.example.com": {"auth": "dXNlcjpwYXNzd29yZA=="}}}',
            },
            "registryCa": {"pem": TEST_PEM},
            "plainHttp": ["registry.local:5000", "10.0.0.7"],
            "imagePullSecrets": {"harbor.example.com": "harbor-pull", "registry.local:5000": "local-pull"},
        },
    }, NAMESPACE, {}),
    # Verification as the kustomize production overlay has it, with the
    # user's own Secret and CA ConfigMap (the chart creates neither).
    ("verify-existing", {
        "verify": {
            "enabled": True, "onError": "swap",
            "registryCredentials": {"secretName": "harbor-robot"},
            "registryCa": {"existingConfigMap": "corporate-ca", "key": "bundle.pem"},
        },
    }, NAMESPACE, {}),
    ("existing-maps", {
        "maps": {"existingConfigMap": "my-maps", "existingConfigMapKey": "rules.conf"},
        "config": {"IMAGESWAP_MAPS_FILE": "/etc/imageswap/maps/rules.conf"},
    }, NAMESPACE, {"maps": ("my-maps", "rules.conf")}),
    ("webhook-by-helm", {
        "webhook": {
            "createByHelm": True, "caBundle": CA_BUNDLE, "failurePolicy": "Ignore", "timeoutSeconds": 10,
            "namespaceSelector": {"matchLabels": None, "matchExpressions": [
                {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NAMESPACE]}]},
        },
    }, NAMESPACE, {}),
    # The operator's own matchConditions, in the template init merges the
    # generated ones into, and in the chart's own object.
    ("own-match-conditions", {
        "webhook": {"matchConditions": OWN_CONDITIONS},
    }, NAMESPACE, {}),
    ("own-match-conditions-by-helm", {
        "webhook": {"createByHelm": True, "caBundle": CA_BUNDLE, "matchConditions": OWN_CONDITIONS},
    }, NAMESPACE, {}),
    # Exclusions beside the operator's own conditions, in the template and in
    # the chart's own object (the CloudNativePG preset first).
    ("exclude-selectors", {
        "webhook": {"matchConditions": [{"name": "team-policy", "expression": "true"}],
                    "excludeSelectors": yaml.safe_load(EXCLUDE_FIXTURE.read_text())["excludeSelectors"]},
    }, NAMESPACE, {}),
    ("exclude-selectors-by-helm", {
        "webhook": {"createByHelm": True, "caBundle": CA_BUNDLE,
                    "excludeSelectors": yaml.safe_load(EXCLUDE_FIXTURE.read_text())["excludeSelectors"][:1]},
    }, NAMESPACE, {}),
    # An opt-out namespace selector: kube-system and the release namespace
    # are still excluded (the chart adds them; validate-manifests checks).
    ("opt-out-namespaces", {
        "webhook": {"namespaceSelector": {"matchLabels": None, "matchExpressions": [
            {"key": "k8s.twr.io/imageswap", "operator": "NotIn", "values": ["disabled"]}]}},
    }, "platform", {}),
    # Clusters before 1.29: one-shot init container plus a plain watch container.
    ("plain-sidecar", {"nativeSidecar": False}, NAMESPACE, {}),
    # The cluster's signer (the original's way): the CSR rights are added,
    # the self-signed CA's secret goes (docs/operations.md's table).
    ("csr", {"config": {"IMAGESWAP_CERT_SOURCE": "csr"}}, NAMESPACE, {}),
    # Your own pair: no write on secrets at all.
    ("byoc", {"config": {"IMAGESWAP_CERT_SOURCE": "byoc"}}, NAMESPACE, {}),
    # Pull secret projection: the cluster-wide namespace, secret and event
    # rights are added (docs/operations.md's `projection` rows), with any source.
    ("projection", {"config": {"IMAGESWAP_PROJECT_PULL_SECRETS": "on"},
                    "verify": {"imagePullSecrets": {"harbor.example.com": "harbor-pull"}}}, NAMESPACE, {}),
    ("projection-byoc", {"config": {"IMAGESWAP_PROJECT_PULL_SECRETS": "on", "IMAGESWAP_CERT_SOURCE": "byoc"}},
     NAMESPACE, {}),
    # The webhook configuration yours and no source set: the program keeps
    # csr (the caBundle you keep trusts the cluster CA), so the chart grants
    # the CSR rights and none on webhook configurations.
    ("auto-mwc-off", {"config": {"IMAGESWAP_CERT_SOURCE": None, "IMAGESWAP_DISABLE_AUTO_MWC": "TRUE"}},
     NAMESPACE, {}),
    ("legacy-single", {
        "config": {"IMAGESWAP_MODE": "LEGACY", "IMAGE_PREFIX": "registry.example.com", "IMAGESWAP_LOG_LEVEL": "DEBUG"},
        "autoscaling": {"enabled": False},
        "replicas": 1,
        "podDisruptionBudget": {"maxUnavailable": 1},
        "cleanup": {"enabled": False},
    }, NAMESPACE, {}),
    ("renamed", {
        "namespace": {"create": True},
        "config": {
            "IMAGESWAP_SERVICE_NAME": "swapper",
            "IMAGESWAP_TLS_SECRET_NAME": "swapper-tls",
            "IMAGESWAP_TLS_CA_SECRET_NAME": "swapper-ca",
            "IMAGESWAP_MWC_NAME": "swapper-webhook",
            "IMAGESWAP_WEBHOOK_NAME": "swap.webhook.example.com",
            "IMAGESWAP_CSR_SIGNER_NAME": "beta.eks.amazonaws.com/app-serving",
            "IMAGESWAP_DISABLE_LABEL": "example.com/swap",
            "IMAGESWAP_LISTEN": "[::]:8443",
            "IMAGESWAP_TLS_DIR": "/run/tls",
            "IMAGESWAP_TLS_CERT": "/run/tls/cert.pem",
            "IMAGESWAP_TLS_KEY": "/run/tls/key.pem",
            "IMAGESWAP_MWC_TEMPLATE": "/etc/mwc/template.yaml",
            "IMAGESWAP_REQUEST_TIMEOUT": "3s",
            "IMAGESWAP_SHUTDOWN_GRACE": "40s",
        },
        "terminationGracePeriodSeconds": 60,
        "webhook": {"servicePort": 8443},
    }, "swap-system", {}),
]

# Values that must be refused: (what, values, a fragment of the message).
REFUSED = [
    ("unknown top-level value", {"replica": 3}, "additional properties 'replica'"),
    ("misspelt setting", {"config": {"IMAGESWAP_LOGLEVEL": "DEBUG"}}, "IMAGESWAP_LOGLEVEL"),
    ("log level", {"config": {"IMAGESWAP_LOG_LEVEL": "LOUD"}}, "IMAGESWAP_LOG_LEVEL"),
    ("projection switch", {"config": {"IMAGESWAP_PROJECT_PULL_SECRETS": "yes"}}, "IMAGESWAP_PROJECT_PULL_SECRETS"),
    ("empty namespace selector", {"config": {"IMAGESWAP_PROJECT_NAMESPACE_SELECTOR": ""}},
     "IMAGESWAP_PROJECT_NAMESPACE_SELECTOR"),
    ("empty setting", {"config": {"IMAGESWAP_LISTEN": ""}}, "IMAGESWAP_LISTEN"),
    ("listen address", {"config": {"IMAGESWAP_LISTEN": "5000"}}, "IMAGESWAP_LISTEN"),
    ("duration", {"config": {"IMAGESWAP_REQUEST_TIMEOUT": "2 seconds"}}, "IMAGESWAP_REQUEST_TIMEOUT"),
    ("LEGACY without a prefix", {"config": {"IMAGESWAP_MODE": "LEGACY"}}, "IMAGE_PREFIX"),
    ("relative maps path", {"config": {"IMAGESWAP_MAPS_FILE": "maps.conf"}}, "IMAGESWAP_MAPS_FILE"),
    ("OTLP protocol", {"config": {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}}, "OTEL_EXPORTER_OTLP_PROTOCOL"),
    ("sampler ratio", {"config": {"OTEL_TRACES_SAMPLER_ARG": 2}}, "OTEL_TRACES_SAMPLER_ARG"),
    ("failure policy", {"webhook": {"failurePolicy": "Retry"}}, "failurePolicy"),
    ("webhook timeout", {"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds"),
    ("every namespace", {"webhook": {"namespaceSelector": {"matchLabels": None}}}, "webhook.namespaceSelector"),
    ("timeout below the server's", {"webhook": {"timeoutSeconds": 2}}, "IMAGESWAP_REQUEST_TIMEOUT"),
    ("grace not above shutdown + preStop", {"terminationGracePeriodSeconds": 25}, "terminationGracePeriodSeconds"),
    ("certificate outside the TLS dir", {"config": {"IMAGESWAP_TLS_CERT": "/etc/cert.pem"}}, "IMAGESWAP_TLS_DIR"),
    ("createByHelm without caBundle", {"webhook": {"createByHelm": True}}, "caBundle"),
    ("match condition without expression", {"webhook": {"matchConditions": [{"name": "x"}]}}, "matchConditions"),
    ("match condition name", {"webhook": {"matchConditions": [{"name": "not a name", "expression": "true"}]}},
     "matchConditions"),
    ("exclusion without a selector", {"webhook": {"excludeSelectors": [{"name": "all"}]}}, "excludeSelectors"),
    ("exclusion In without values", {"webhook": {"excludeSelectors": [
        {"name": "x", "matchExpressions": [{"key": "a", "operator": "In"}]}]}}, "excludeSelectors"),
    ("exclusion Exists with values", {"webhook": {"excludeSelectors": [
        {"name": "x", "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]}]}}, "excludeSelectors"),
    ("exclusion label key", {"webhook": {"excludeSelectors": [
        {"name": "x", "matchLabels": {"a'b": "c"}}]}}, "invalid propertyName"),
    ("exclusion label value", {"webhook": {"excludeSelectors": [
        {"name": "x", "matchLabels": {"a": "it's"}}]}}, "excludeSelectors"),
    ("exclusion name twice", {"webhook": {"excludeSelectors": [
        {"name": "x", "matchLabels": {"a": "b"}}, {"name": "x", "matchLabels": {"c": "d"}}]}}, "excludeSelectors"),
    ("exclusion name of an own condition", {"webhook": {
        "matchConditions": [{"name": "exclude-x", "expression": "true"}],
        "excludeSelectors": [{"name": "x", "matchLabels": {"a": "b"}}]}}, "exclude-x"),
    ("more conditions than the API server allows", {"webhook": {
        "matchConditions": [{"name": f"own-{i}", "expression": "true"} for i in range(40)],
        "excludeSelectors": [{"name": f"x{i}", "matchLabels": {"a": "b"}} for i in range(22)]}}, "at most 61"),
    ("pod label that opts ImageSwap in", {"podLabels": {"k8s.twr.io/imageswap": "enabled"}}, "podLabels"),
    ("PDB bound", {"podDisruptionBudget": {"minAvailable": "half"}}, "minAvailable"),
    ("HPA min above max", {"autoscaling": {"minReplicas": 8}}, "autoscaling.minReplicas"),
    ("zero replicas", {"replicas": 0}, "replicas"),
    ("pull policy", {"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ("image digest", {"image": {"digest": "latest"}}, "digest"),
    ("no maps at all", {"maps": {"content": ""}}, "content"),
    ("verify on-error policy", {"verify": {"enabled": True, "onError": "retry"}}, "onError"),
    ("verify as a word", {"verify": {"enabled": "on"}}, "enabled"),
    ("verify timeout", {"verify": {"timeout": "1 second"}}, "timeout"),
    ("verify TTL", {"verify": {"ttl": "forever"}}, "ttl"),
    ("verify missing TTL", {"verify": {"missingTtl": 30}}, "missingTtl"),
    ("verify stale-if-error", {"verify": {"staleIfError": "an hour"}}, "staleIfError"),
    ("verify platforms as one string", {"verify": {"platforms": "linux/amd64,linux/arm64"}}, "platforms"),
    ("verify platform without os", {"verify": {"platforms": ["arm64"]}}, "platforms"),
    ("verify timeout not below the request's", {"verify": {"enabled": True, "timeout": "2s"}}, "verify.timeout"),
    ("plain-HTTP host with a scheme", {"verify": {"plainHttp": ["http://registry.local"]}}, "plainHttp"),
    ("plain-HTTP hosts as one string", {"verify": {"plainHttp": "a.example.com,b.example.com"}}, "plainHttp"),
    ("pull secret registry with a path", {"verify": {"imagePullSecrets": {"harbor.example.com/dockerhub": "p"}}},
     "imagePullSecrets"),
    ("pull secret name", {"verify": {"imagePullSecrets": {"harbor.example.com": "Harbor_Pull"}}}, "imagePullSecrets"),
    ("credentials without auths", {"verify": {"registryCredentials": {"dockerConfigJson": "{}"}}}, "dockerConfigJson"),
    ("credentials that are no JSON", {"verify": {"registryCredentials": {"dockerConfigJson": "user:password"}}},
     "dockerConfigJson"),
    ("credentials without a Secret name", {"verify": {"registryCredentials": {
        "secretName": "", "dockerConfigJson": '{"auths": {}}'}}}, "secretName"),
    ("two CA sources", {"verify": {"registryCa": {"existingConfigMap": "ca", "pem": TEST_PEM}}}, "verify.registryCa"),
    ("CA that is no PEM", {"verify": {"registryCa": {"pem": "not a certificate"}}}, "pem"),
    ("pod label app", {"podLabels": {"app": "other"}}, "'app'"),
    ("metrics on the webhook port", {"config": {"IMAGESWAP_METRICS_LISTEN": "0.0.0.0:5000"}}, "IMAGESWAP_METRICS_LISTEN"),
    ("sidecar on the metrics port", {"config": {"IMAGESWAP_METRICS_LISTEN": "0.0.0.0:9090",
                                                "IMAGESWAP_WATCH_LISTEN": "0.0.0.0:9090"}}, "IMAGESWAP_WATCH_LISTEN"),
    ("renewal fraction", {"config": {"IMAGESWAP_CERT_RENEW_FRACTION": "a third"}}, "IMAGESWAP_CERT_RENEW_FRACTION"),
    ("certificate source", {"config": {"IMAGESWAP_CERT_SOURCE": "acme"}}, "IMAGESWAP_CERT_SOURCE"),
    ("network policy without the control plane", {"networkPolicy": {"enabled": True}}, "networkPolicy.controlPlaneCIDRs"),
    ("network policy range", {"networkPolicy": {"enabled": True, "controlPlaneCIDRs": ["10.0.0.1"]}}, "controlPlaneCIDRs"),
    # Values the chart would otherwise drop without a word (issue 19).
    ("replicas with autoscaling on", {"replicas": 3}, "autoscaling.enabled"),
    ("maps content with an existing ConfigMap", {"maps": {"existingConfigMap": "my-maps", "content": "default::\n"}},
     "maps.existingConfigMap"),
]

# The oldest Kubernetes the plain-sidecar value set (nativeSidecar=false, no
# preStop `sleep` action) is for; the chart's kubeVersion must admit it.
PLAIN_SIDECAR_KUBERNETES = (1, 28)

# Not keys of `config`, on purpose: from the downward API, or never in a cluster.
NOT_CONFIG = {"IMAGESWAP_POD_NAME", "IMAGESWAP_NAMESPACE_NAME", "IMAGESWAP_INSECURE_HTTP", "IMAGESWAP_DEV"}
# Set by the chart's `verify` block (mirror verification, issue 11), not by `config`.
VERIFY_BLOCK = {"IMAGESWAP_VERIFY", "IMAGESWAP_VERIFY_ON_ERROR", "IMAGESWAP_VERIFY_TIMEOUT", "IMAGESWAP_VERIFY_TTL",
                "IMAGESWAP_VERIFY_MISSING_TTL", "IMAGESWAP_VERIFY_STALE_IF_ERROR", "IMAGESWAP_VERIFY_PLATFORMS",
                "IMAGESWAP_REGISTRY_CONFIG", "IMAGESWAP_REGISTRY_CA",
                "IMAGESWAP_REGISTRY_PLAIN_HTTP", "IMAGESWAP_IMAGE_PULL_SECRETS"}
# Written from webhook.timeoutSeconds, so the two cannot disagree.
FROM_WEBHOOK = {"IMAGESWAP_WEBHOOK_TIMEOUT"}


class Problems:
    def __init__(self):
        self.lines = []

    def add(self, where, message):
        self.lines.append(f"{where}: {message}")


def render(chart, values, namespace=NAMESPACE):
    """The rendered objects, NOTES.txt left out."""
    manifests = chart.render(values, name=RELEASE, namespace=namespace, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(o for o in yaml.safe_load_all(text) if o)
    return objects


def key(obj):
    return (obj["kind"], obj["metadata"]["name"])


def is_hook(obj):
    return HOOK in (obj["metadata"].get("annotations") or {})


def differences(a, b, path=""):
    """Paths where two parsed objects differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in a:
                out.append(f"{sub}: only in the chart ({b[k]!r:.80})")
            elif k not in b:
                out.append(f"{sub}: only in the base ({a[k]!r:.80})")
            else:
                out.extend(differences(a[k], b[k], sub))
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    if a == b:
        return []
    if isinstance(a, str) and isinstance(b, str) and "\n" in a + b:
        lines_a, lines_b = a.splitlines(), b.splitlines()
        i = next((i for i, (x, y) in enumerate(zip(lines_a, lines_b)) if x != y), min(len(lines_a), len(lines_b)))
        return [f"{path}: line {i + 1}: base {(lines_a[i:] or [''])[0]!r:.80}, chart {(lines_b[i:] or [''])[0]!r:.80}"]
    return [f"{path}: base {a!r:.80}, chart {b!r:.80}"]


def with_template_parsed(obj):
    """The object, with the webhook template inside its ConfigMap parsed."""
    obj = copy.deepcopy(obj)
    if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == vm.TEMPLATE_CONFIGMAP:
        obj["data"][vm.TEMPLATE_KEY] = yaml.safe_load(obj["data"][vm.TEMPLATE_KEY])
    return obj


def compare_with_base(base, chart_default, chart_namespace, chart_fixed_replicas, problems):
    """Object by object; the differences allowed are the README's list."""
    where = "same objects as deploy/manifests"
    base_objects = {key(o): with_template_parsed(o) for o in base}
    ours = {key(o): with_template_parsed(o) for o in chart_default if not is_hook(o)}
    for k in sorted(set(base_objects) | set(ours)):
        a, b = base_objects.get(k), ours.get(k)
        if k[0] == "Namespace" and b is None:
            # Difference 1: no Namespace by default (Helm needs it before the
            # release); namespace.create renders the base's.
            b = next((with_template_parsed(o) for o in chart_namespace if o["kind"] == "Namespace"), None)
            if b is None:
                problems.add(where, "namespace.create=true renders no Namespace")
                continue
        if a is None or b is None:
            problems.add(where, f"{k[0]}/{k[1]} is only in the {'chart' if a is None else 'base'}")
            continue
        if k[0] == "Deployment":
            b = copy.deepcopy(b)
            # Difference 2: with the HPA on, the HPA owns the replica count.
            if "replicas" in b["spec"]:
                problems.add(where, "Deployment: spec.replicas is rendered although autoscaling is on")
            fixed = next(o for o in chart_fixed_replicas if o["kind"] == "Deployment")
            if fixed["spec"].get("replicas") != a["spec"].get("replicas"):
                problems.add(where, f"Deployment: autoscaling.enabled=false renders replicas {fixed['spec'].get('replicas')}, the base has {a['spec'].get('replicas')}")
            b["spec"]["replicas"] = a["spec"].get("replicas")
            # Difference 3: the pods restart when the settings or the webhook
            # template change.
            annotations = b["spec"]["template"]["metadata"].get("annotations", {})
            checksum = annotations.pop(CHECKSUM, None)
            if not re.fullmatch(r"[0-9a-f]{64}", str(checksum)):
                problems.add(where, f"Deployment: pod annotation {CHECKSUM} missing or not a sha256: {checksum!r}")
        for d in differences(a, b):
            problems.add(where, f"{k[0]}/{k[1]}: {d}")
    return len(base_objects)


def expected_image(chart, values):
    """The image every container must run with these values: the release
    (the chart's appVersion, which check-deploy holds equal to the base's
    tag) unless the values name another."""
    image = {"repository": "thewebroot/imageswap", "tag": "", "digest": ""}
    image.update(values.get("image", {}))
    if image["digest"]:
        return f"{image['repository']}@{image['digest']}"
    return f"{image['repository']}:{image['tag'] or chart.metadata['appVersion']}"


def check_webhook(name, objects, values, namespace, problems):
    """No webhook configuration from Helm unless the chart owns it; the hook deletes exactly the one init makes."""
    where = f"webhook [{name}]"
    env = dict(vm.DEFAULTS)
    env.update(next(o for o in objects if key(o) == ("ConfigMap", vm.ENV_CONFIGMAP)).get("data") or {})
    mwc_name = env["IMAGESWAP_MWC_NAME"]
    by_helm = values.get("webhook", {}).get("createByHelm", False)
    cleanup = values.get("cleanup", {}).get("enabled", True) and not by_helm
    mwcs = [o for o in objects if o["kind"] == "MutatingWebhookConfiguration" and not is_hook(o)]
    hooks = [o for o in objects if is_hook(o)]
    # webhook.matchConditions: in the template (init adds the generated ones
    # to it), exactly as given, then one `exclude-NAME` per
    # webhook.excludeSelectors entry (the fixture's: exactly its
    # expressions); none by default.
    own = values.get("webhook", {}).get("matchConditions") or []
    exclusions = values.get("webhook", {}).get("excludeSelectors") or []
    fixture = yaml.safe_load(EXCLUDE_FIXTURE.read_text())
    expected = {c["name"]: c["expression"] for c in fixture["matchConditions"]}
    template_cm = next(o for o in objects if key(o) == ("ConfigMap", vm.TEMPLATE_CONFIGMAP))
    for hook in yaml.safe_load(template_cm["data"][vm.TEMPLATE_KEY])["webhooks"]:
        conditions = hook.get("matchConditions") or []
        names = [c["name"] for c in conditions]
        wanted = [c["name"] for c in own] + [f"exclude-{e['name']}" for e in exclusions]
        if conditions[:len(own)] != own or names != wanted:
            problems.add(where, f"the template's matchConditions must be webhook.matchConditions, then "
                         f"exclude-NAME per webhook.excludeSelectors entry ({wanted}): {names}")
        for condition in conditions[len(own):]:
            if condition["name"] in expected and condition["expression"] != expected[condition["name"]]:
                problems.add(where, f"{condition['name']} renders {condition['expression']!r}, not the expression "
                             f"{EXCLUDE_FIXTURE.relative_to(ROOT)} has (and the CEL test evaluates)")
    if not by_helm:
        if mwcs:
            problems.add(where, "`helm install` would create a MutatingWebhookConfiguration; the init container makes it")
    else:
        if [o["metadata"]["name"] for o in mwcs] != [mwc_name]:
            problems.add(where, f"webhook.createByHelm must render exactly MutatingWebhookConfiguration {mwc_name}")
        else:
            template_cm = next(o for o in objects if key(o) == ("ConfigMap", vm.TEMPLATE_CONFIGMAP))
            template = yaml.safe_load(template_cm["data"][vm.TEMPLATE_KEY])
            for hook in template["webhooks"]:
                hook["clientConfig"]["caBundle"] = values["webhook"]["caBundle"]
            for d in differences(template, mwcs[0]):
                problems.add(where, f"the chart's webhook configuration differs from the template plus caBundle: {d}")
        if env.get("IMAGESWAP_DISABLE_AUTO_MWC", "").lower() != "true":
            problems.add(where, "webhook.createByHelm must set IMAGESWAP_DISABLE_AUTO_MWC=TRUE")
        role = next((o for o in objects if key(o) == ("ClusterRole", "imageswap-write")), {"rules": []})
        if any("mutatingwebhookconfigurations" in r.get("resources", []) for r in role["rules"]):
            problems.add(where, "with webhook.createByHelm, imageswap-write must grant nothing on webhook configurations")
    if not cleanup:
        if hooks:
            problems.add(where, f"no hook expected, found {[key(o) for o in hooks]}")
        return
    kinds = sorted(o["kind"] for o in hooks)
    if kinds != ["ClusterRole", "ClusterRoleBinding", "Job", "ServiceAccount"]:
        problems.add(where, f"the cleanup hook needs a ServiceAccount, ClusterRole, ClusterRoleBinding and Job; found {kinds}")
        return
    for o in hooks:
        ann = o["metadata"]["annotations"]
        if ann[HOOK] != "pre-delete":
            problems.add(where, f"{o['kind']}: must be a pre-delete hook, is {ann[HOOK]}")
        policy = set(ann.get("helm.sh/hook-delete-policy", "").split(","))
        if not {"before-hook-creation", "hook-succeeded"} <= policy:
            problems.add(where, f"{o['kind']}: hook-delete-policy must include before-hook-creation and hook-succeeded")
        if (o["metadata"].get("labels") or {}).get("app") == "imageswap":
            problems.add(where, f"{o['kind']}: must not carry app: imageswap (the Service and PDB select it)")
    by_kind = {o["kind"]: o for o in hooks}
    weights = {k: int(o["metadata"]["annotations"].get("helm.sh/hook-weight", "0")) for k, o in by_kind.items()}
    if not all(weights[k] < weights["Job"] for k in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")):
        problems.add(where, "the Job's hook weight must come after its ServiceAccount and RBAC")
    rules = by_kind["ClusterRole"]["rules"]
    wanted = [{"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"],
               "resourceNames": [mwc_name], "verbs": ["delete"]}]
    if rules != wanted:
        problems.add(where, f"the hook's ClusterRole must allow only deleting {mwc_name}: {rules}")
    crb, sa, job = by_kind["ClusterRoleBinding"], by_kind["ServiceAccount"], by_kind["Job"]
    pod = job["spec"]["template"]["spec"]
    if crb["roleRef"]["name"] != by_kind["ClusterRole"]["metadata"]["name"] or crb["subjects"] != [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": namespace}] \
            or pod.get("serviceAccountName") != sa["metadata"]["name"]:
        problems.add(where, "the hook's binding must bind its ClusterRole to its ServiceAccount, which the Job uses")
    # kubectl's in-cluster configuration needs the mounted token.
    if pod.get("automountServiceAccountToken") is False or (
            sa.get("automountServiceAccountToken") is False and pod.get("automountServiceAccountToken") is not True):
        problems.add(where, "the Job's pod gets no service account token, so kubectl cannot reach the API server")
    container = pod["containers"][0]
    args = container.get("args", [])
    if args[:3] != ["delete", "mutatingwebhookconfiguration", mwc_name] or "--ignore-not-found" not in args:
        problems.add(where, f"the Job must run `kubectl delete mutatingwebhookconfiguration {mwc_name} --ignore-not-found`: {args}")
    # The namespace enforces the restricted Pod Security Standard.
    psc, sc = pod.get("securityContext", {}), container.get("securityContext", {})
    if (psc.get("runAsNonRoot") is not True or not psc.get("runAsUser") or psc.get("seccompProfile", {}).get("type") != "RuntimeDefault"
            or sc.get("allowPrivilegeEscalation") is not False or sc.get("capabilities", {}).get("drop") != ["ALL"]
            or sc.get("readOnlyRootFilesystem") is not True):
        problems.add(where, "the Job's pod must meet the restricted Pod Security Standard")
    if job["metadata"]["namespace"] != namespace:
        problems.add(where, "the Job must run in the release namespace")


def changed_leaves(a, b, path=()):
    """(path, value in b) of every leaf where b differs from a."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [leaf for k in b for leaf in changed_leaves(a.get(k), b[k], path + (k,))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [leaf for i, (x, y) in enumerate(zip(a, b)) for leaf in changed_leaves(x, y, path + (i,))]
    return [] if a == b else [(path, b)]


def lookup(obj, path):
    for step in path:
        if isinstance(obj, dict):
            obj = obj.get(step)
        elif isinstance(obj, list) and isinstance(step, int) and step < len(obj):
            obj = obj[step]
        else:
            return None
    return obj


def check_production_example(chart, base_path, problems):
    """docs/helm.md's values "for example what the production overlay sets",
    rendered, set every field deploy/overlays/production changes in the base
    (check-deploy renders it next to the base)."""
    where = "docs/helm.md's production example"
    doc = (ROOT / "docs/helm.md").read_text()
    at = doc.find("production overlay sets")
    block = re.search(r"```yaml\n(.*?)```", doc[at:], re.S) if at >= 0 else None
    if block is None:
        problems.add(where, "no ```yaml block after \"production overlay sets\"")
        return 0
    try:
        ours = {key(o): o for o in render(chart, yaml.safe_load(block.group(1))) if not is_hook(o)}
    except helm.HelmError as e:
        problems.add(where, str(e).strip())
        return 0
    with open(base_path) as f:
        base_objects = {key(o): o for o in yaml.safe_load_all(f) if o}
    with open(Path(base_path).parent / "production.yaml") as f:
        production = [o for o in yaml.safe_load_all(f) if o]
    checked = 0
    for obj in production:
        k = key(obj)
        if k not in base_objects:
            continue
        for path, wanted in changed_leaves(base_objects[k], obj):
            if k[0] == "Deployment" and path == ("spec", "replicas"):
                continue  # with the HPA on, the HPA owns the count (autoscaling.minReplicas)
            checked += 1
            got = lookup(ours.get(k), path)
            if got != wanted:
                problems.add(where, f"{k[0]}/{k[1]}: {'.'.join(map(str, path))} is {got!r} with the example, "
                                    f"{wanted!r} in deploy/overlays/production")
    if checked < 5:
        problems.add(where, f"only {checked} fields of the production overlay compared: did its rendering change?")
    return checked


def check_refused(chart, problems):
    for what, values, fragment in REFUSED:
        try:
            render(chart, values)
        except (helm.HelmValuesError, helm.HelmRenderError) as e:
            message = str(e)
            if fragment not in message:
                problems.add(f"refused [{what}]", f"refused, but the message does not name {fragment!r}: {message.strip()[:300]}")
            continue
        problems.add(f"refused [{what}]", f"{values} renders, but must be refused")
    return len(REFUSED)


def check_every_setting(chart, problems):
    where = "every setting"
    config = set(yaml.safe_load((CHART / "values.yaml").read_text())["config"])
    base_cm = (ROOT / "deploy/manifests/imageswap-env-cm.yaml").read_text()
    base_vars = set(re.findall(r"^\s*#?\s*([A-Z][A-Z0-9_]+):", base_cm, re.M))
    docs = (ROOT / "docs/configuration.md").read_text()
    doc_vars = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", docs, re.M))
    # The program's own: every `env = "…"` of its clap arguments (test-only
    # names, without the IMAGESWAP_/OTEL_ prefix, are left out).
    src_vars = {name for path in (ROOT / "src").rglob("*.rs")
                for name in re.findall(r'env\s*=\s*"([A-Z][A-Z0-9_]+)"', path.read_text())
                if name.startswith(("IMAGESWAP_", "OTEL_")) or name == "IMAGE_PREFIX"}
    for source, names in (("deploy/manifests/imageswap-env-cm.yaml", base_vars), ("docs/configuration.md", doc_vars),
                          ("src/", src_vars)):
        for name in sorted(names - config - NOT_CONFIG - VERIFY_BLOCK - FROM_WEBHOOK):
            problems.add(where, f"{name} ({source}) is not a key of values.yaml's config")
    schema = set(chart.schema["properties"]["config"]["properties"])
    for name in sorted(config ^ schema):
        problems.add(where, f"{name}: in {'values.yaml' if name in config else 'values.schema.json'} only")
    if len(src_vars) < 30:
        problems.add(where, f"found only {len(src_vars)} variables in src/: has the clap `env = \"…\"` form changed?")
    return len(config), len(src_vars)


def check_kube_version(chart, problems):
    """The chart's kubeVersion (`>=MAJOR.MINOR…`) admits the clusters
    nativeSidecar=false is for: Helm refuses to install it elsewhere."""
    constraint = chart.metadata.get("kubeVersion", "")
    match = re.fullmatch(r">=\s*v?(\d+)\.(\d+)(?:\.\d+)?(?:-0)?", constraint.strip())
    if not match:
        problems.add("kubeVersion", f"{constraint!r} is not of the form >=1.N.0-0, which this check reads")
    elif (int(match.group(1)), int(match.group(2))) > PLAIN_SIDECAR_KUBERNETES:
        problems.add("kubeVersion", f"{constraint!r} refuses Kubernetes {'.'.join(map(str, PLAIN_SIDECAR_KUBERNETES))}, "
                     "which nativeSidecar=false is for")
    return constraint


def check_lint(versions, value_sets, problems):
    runs = 0
    for version in versions:
        for name, values in value_sets:
            report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{version}.0")
            runs += 1
            for m in report.get("messages", []):
                if m["severity"] >= 2:
                    problems.add(f"lint [{name}, Kubernetes {version}]", f"{m['path']}: {m['error']}")
            for e in report.get("errors", []):
                problems.add(f"lint [{name}, Kubernetes {version}]", e)
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubernetes-version", action="append", required=True, dest="versions")
    parser.add_argument("--base", required=True, help="deploy/manifests rendered by kustomize")
    parser.add_argument("--out", required=True, help="directory for the rendered files")
    args = parser.parse_args()
    problems = Problems()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def report(what, before):
        new = problems.lines[before:]
        print(f"{what}: {'ok' if not new else f'{len(new)} problems'}")
        return len(problems.lines)

    print(f"helm: helm-python-sdk {helm.__version__}, Helm {helm.helm_sdk_version()}")
    chart = helm.Chart.load(CHART)
    n = 0

    all_sets = [("default", {}, NAMESPACE, {})] + VALUE_SETS
    runs = check_lint(args.versions, [(name, values) for name, values, _, _ in all_sets], problems)
    n = report(f"lint --strict: {runs} runs ({len(all_sets)} value sets, Kubernetes {', '.join(args.versions)})", n)

    rendered = {}
    count = 0
    for name, values, namespace, options in all_sets:
        try:
            objects = render(chart, values, namespace)
        except helm.HelmError as e:
            problems.add(f"render [{name}]", str(e).strip())
            continue
        rendered[name] = objects
        (out / f"helm-{name}.yaml").write_text(yaml.safe_dump_all(objects, sort_keys=False))
        consistency = {"image": expected_image(chart, values)}
        if "maps" in options:
            consistency.update({"maps_configmap": options["maps"], "maps_external": True})
        count += vm.check_objects(objects, f"helm [{name}]", args.versions, problems, **consistency)
        check_webhook(name, objects, values, namespace, problems)
    n = report(f"render and validate: {count} objects in {len(rendered)} value sets against Kubernetes "
               f"{', '.join(args.versions)}; the webhook configuration and the cleanup hook", n)

    if "default" in rendered:
        with open(args.base) as f:
            base = [o for o in yaml.safe_load_all(f) if o]
        compared = compare_with_base(base, rendered["default"], render(chart, {"namespace": {"create": True}}),
                                     render(chart, {"autoscaling": {"enabled": False}}), problems)
        n = report(f"default values against deploy/manifests: {compared} objects compared", n)

    constraint = check_kube_version(chart, problems)
    n = report(f"kubeVersion {constraint!r} admits Kubernetes "
               f"{'.'.join(map(str, PLAIN_SIDECAR_KUBERNETES))} (nativeSidecar=false)", n)

    refused = check_refused(chart, problems)
    n = report(f"bad values refused: {refused} cases", n)

    settings, program = check_every_setting(chart, problems)
    n = report(f"every setting in values.yaml: {settings} config keys against the base's env ConfigMap, "
               f"docs/configuration.md and the program's {program} variables", n)

    fields = check_production_example(chart, args.base, problems)
    n = report(f"docs/helm.md's production example against deploy/overlays/production: {fields} fields", n)

    table = subprocess.run([sys.executable, str(ROOT / "scripts/helm-values-table"), "--check"],
                           capture_output=True, text=True)
    if table.returncode != 0:
        problems.add("values table", (table.stderr or table.stdout).strip())
    n = report("README values table current", n)

    with tempfile.TemporaryDirectory() as tmp:
        archive = helm.package(CHART, destination=tmp)
        packaged = helm.Chart.load(archive)
        names = {f["name"] for f in packaged.files}
        for wanted in ("README.md", "values.schema.json"):
            if wanted not in names and not (wanted == "values.schema.json" and packaged.schema):
                problems.add("package", f"{wanted} is not in the archive")
        if "default" in rendered and render(packaged, {}) != rendered["default"]:
            problems.add("package", "the archive renders other objects than the chart directory")
        size = Path(archive).stat().st_size
        digest = hashlib.sha256(Path(archive).read_bytes()).hexdigest()[:12]
    n = report(f"package: {Path(archive).name} ({size} bytes, sha256 {digest}…) renders the same objects", n)

    for line in problems.lines:
        print(line)
    print(f"check-helm: {len(problems.lines)} problems ({time.monotonic() - started:.1f} s)")
    return 1 if problems.lines else 0


if __name__ == "__main__":
    sys.exit(main())
