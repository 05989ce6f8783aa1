// The images the load tests put in pod specs, each with whether the load
// tests' maps file (loadtest/imageswap-maps.conf) swaps it, so every response
// can be checked for a patch exactly when one is due.
//
// The set mimics a real cluster: mostly Docker Hub official and organisation
// images, then quay.io, ghcr.io, registry.k8s.io (opted out), other public
// registries (the `default` rule), private registries with ports (some opted
// out by noswap_wildcards), pinned digests, images that a [REPLACE] glob
// flattens, and images that already point at the mirror (a re-invoked
// webhook sees those). A fixed pool gives cache hits;
// `UNIQUE_TAG` images (a CI build tag per request) give a steady trickle of
// misses.

// Replaced per request by a value never used before.
export const UNIQUE_TAG = '@@UNIQUE@@';

const DIGEST_A = 'sha256:7f0b1bb0e5ef6a1e0d3b2c6b4a9f8e7d6c5b4a3928170f6e5d4c3b2a19087f6e';
const DIGEST_B = 'sha256:4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d';

// [image, swapped by loadtest/imageswap-maps.conf]
export const POOL = [
  // Docker Hub official images (docker.io/library key; busybox:1.36 has an [EXACT] rule)
  ['nginx:1.27', true], ['nginx:1.25-alpine', true], ['nginx', true],
  ['redis:7.2', true], ['redis:7.4-alpine', true], ['postgres:16', true], ['postgres:15.6', true],
  ['mysql:8.0', true], ['mongo:7.0', true], ['rabbitmq:3.13-management', true],
  ['busybox:1.36', true], ['busybox:1.35', true], ['alpine:3.20', true], ['alpine:3.19', true],
  ['python:3.12-slim', true], ['node:20-alpine', true], ['golang:1.22', true], ['memcached:1.6', true],
  ['docker.io/library/nginx:1.27', true], ['index.docker.io/library/httpd:2.4', true],
  [`nginx@${DIGEST_A}`, true], [`redis:7.2@${DIGEST_B}`, true],
  // Docker Hub organisation images (docker.io key)
  ['bitnami/redis:7.2', true], ['bitnami/postgresql:16.2.0', true], ['bitnami/kafka:3.7', true],
  ['grafana/grafana:10.4.2', true], ['grafana/loki:2.9.6', true], ['prom/prometheus:v2.51.0', true],
  ['hashicorp/vault:1.16', true], ['docker.io/envoyproxy/envoy:v1.29.2', true], ['traefik/whoami:v1.10', true],
  // quay.io (value ending in "-")
  ['quay.io/prometheus/prometheus:v2.48.0', true], ['quay.io/prometheus/node-exporter:v1.7.0', true],
  ['quay.io/jetstack/cert-manager-controller:v1.14.4', true], ['quay.io/argoproj/argocd:v2.10.6', true],
  [`quay.io/cilium/cilium:v1.15.3@${DIGEST_A}`, true],
  // ghcr.io: the organisation with its own key, and the others via default
  ['ghcr.io/my-org/api:1.4.2', true], ['ghcr.io/my-org/worker:1.4.2', true], ['ghcr.io/my-org/web:2.0.0', true],
  ['ghcr.io/fluxcd/source-controller:v1.2.0', true], ['ghcr.io/external-secrets/external-secrets:v0.9.13', true],
  ['ghcr.io/public-tools/jq:1.7', true], ['ghcr.io/public-charts/nginx-exporter:0.11', true],
  // registry.k8s.io: opted out
  ['registry.k8s.io/pause:3.9', false], ['registry.k8s.io/coredns/coredns:v1.11.1', false],
  ['registry.k8s.io/ingress-nginx/controller:v1.9.4', false], ['registry.k8s.io/metrics-server/metrics-server:v0.7.0', false],
  [`registry.k8s.io/kube-proxy:v1.29.3@${DIGEST_B}`, false],
  // Other public registries: the default rule
  ['gcr.io/distroless/static:nonroot', true], ['gcr.io/google-samples/hello-app:1.0', true],
  ['public.ecr.aws/nginx/nginx:1.25', true], ['mcr.microsoft.com/dotnet/aspnet:8.0', true],
  ['docker.elastic.co/elasticsearch/elasticsearch:8.13.0', true],
  // Private registries with ports: swapped by default, or opted out by noswap_wildcards
  ['harbor.corp.example:8443/platform/api:2.3', true], ['localhost:5000/dev/app:latest', true],
  ['internal.example.com:5000/team/billing:3.1.0', false], ['internal.example.com/team/frontend:3.1.0', false],
  ['registry.local:5000/app:1', false], [`registry.local:5000/ops/backup@${DIGEST_A}`, false],
  ['redis.cache.svc.cluster.local:5000/redis:7', false],
  // Already on the mirror: left alone
  ['harbor.example.com/library/nginx:1.27', false], ['harbor.example.com/tools/busybox:1.36', false],
];

// Images new to the cache on every request: a CI build tag.
export const UNIQUE_POOL = [
  [`ghcr.io/my-org/api:build-${UNIQUE_TAG}`, true],
  [`harbor.corp.example:8443/platform/jobs:${UNIQUE_TAG}`, true],
  [`internal.example.com:5000/team/preview:${UNIQUE_TAG}`, false],
];
