// AdmissionReview requests shaped like the ones kube-apiserver sends
// (tests/fixtures/admission/ has real-shaped examples): Pods with 1–6
// containers (some with init containers), Deployments and CronJobs, with the
// managed fields, volumes, probes and tolerations that make a real review a
// few kilobytes.
//
// Building a review per request would cost k6 more CPU than the server
// spends answering it, so a seeded generator builds a fixed set once; each
// request then only substitutes its uid (and a unique tag, for the images
// meant to miss the cache) into the serialised text.

import { POOL, UNIQUE_POOL, UNIQUE_TAG } from './images.js';

export const UID_MARK = '@@UID@@';

// Share of images that are new to the cache (a unique CI build tag).
const UNIQUE_IMAGE_SHARE = 0.04;

// mulberry32: a small seeded PRNG, so every run posts the same set.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMESPACES = ['shop', 'payments', 'search', 'batch', 'monitoring', 'platform', 'default'];
const APPS = ['web', 'api', 'worker', 'cache', 'gateway', 'indexer', 'report', 'sync', 'auth', 'cart'];

function pick(random, list) {
  return list[Math.floor(random() * list.length)];
}

function image(random) {
  return random() < UNIQUE_IMAGE_SHARE ? pick(random, UNIQUE_POOL) : pick(random, POOL);
}

function container(random, name, ref, i) {
  const c = {
    name,
    image: ref,
    ports: [{ containerPort: 8080 + i, protocol: 'TCP' }],
    env: [
      { name: 'POD_NAME', valueFrom: { fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.name' } } },
      { name: 'LOG_LEVEL', value: 'info' },
    ],
    resources: {
      limits: { memory: `${128 << Math.floor(random() * 4)}Mi` },
      requests: { cpu: `${50 * (1 + Math.floor(random() * 8))}m`, memory: `${64 << Math.floor(random() * 4)}Mi` },
    },
    volumeMounts: [
      { name: 'kube-api-access-7xk2p', readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' },
    ],
    terminationMessagePath: '/dev/termination-log',
    terminationMessagePolicy: 'File',
    imagePullPolicy: 'IfNotPresent',
  };
  if (random() < 0.5) {
    c.readinessProbe = {
      httpGet: { path: '/healthz', port: 8080 + i, scheme: 'HTTP' },
      timeoutSeconds: 1, periodSeconds: 10, successThreshold: 1, failureThreshold: 3,
    };
  }
  return c;
}

// A pod spec with `count` containers; returns [spec, images in it].
function podSpec(random, app, count, restartPolicy) {
  const images = [];
  const containers = [];
  for (let i = 0; i < count; i++) {
    const [ref, swapped] = image(random);
    images.push([ref, swapped]);
    containers.push(container(random, i === 0 ? app : `${app}-sidecar-${i}`, ref, i));
  }
  const spec = {
    volumes: [{
      name: 'kube-api-access-7xk2p',
      projected: {
        sources: [
          { serviceAccountToken: { expirationSeconds: 3607, path: 'token' } },
          { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } },
          { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } },
        ],
        defaultMode: 420,
      },
    }],
    containers,
    restartPolicy,
    terminationGracePeriodSeconds: 30,
    dnsPolicy: 'ClusterFirst',
    serviceAccountName: 'default',
    serviceAccount: 'default',
    securityContext: {},
    schedulerName: 'default-scheduler',
    tolerations: [
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ],
    priority: 0,
    enableServiceLinks: true,
    preemptionPolicy: 'PreemptLowerPriority',
  };
  if (random() < 0.2) {
    const [ref, swapped] = image(random);
    images.push([ref, swapped]);
    spec.initContainers = [{
      name: 'migrate', image: ref, command: ['/bin/sh', '-c', 'migrate up'],
      resources: {}, terminationMessagePath: '/dev/termination-log',
      terminationMessagePolicy: 'File', imagePullPolicy: 'IfNotPresent',
    }];
  }
  return [spec, images];
}

function metadata(random, name, namespace, app, apiVersion) {
  return {
    name,
    namespace,
    uid: '5f1e0c2a-7b3d-4e8f-9a61-000000000389',
    creationTimestamp: null,
    labels: { app, 'app.kubernetes.io/part-of': namespace },
    annotations: {
      'kubectl.kubernetes.io/last-applied-configuration':
        `{"apiVersion":"${apiVersion}","metadata":{"name":"${name}","namespace":"${namespace}"}}\n`,
    },
    managedFields: [{
      manager: 'kubectl-client-side-apply',
      operation: 'Update',
      apiVersion,
      time: '2026-11-26T10:15:42Z',
      fieldsType: 'FieldsV1',
      fieldsV1: {
        'f:metadata': { 'f:labels': { '.': {}, 'f:app': {} } },
        'f:spec': { 'f:containers': { [`k:{"name":"${app}"}`]: { '.': {}, 'f:image': {}, 'f:name': {} } } },
      },
    }],
  };
}

const KINDS = {
  Pod: { group: '', version: 'v1', resource: 'pods', apiVersion: 'v1' },
  Deployment: { group: 'apps', version: 'v1', resource: 'deployments', apiVersion: 'apps/v1' },
  CronJob: { group: 'batch', version: 'v1', resource: 'cronjobs', apiVersion: 'batch/v1' },
};

function object(random, kind, app, namespace) {
  const api = KINDS[kind].apiVersion;
  if (kind === 'Pod') {
    const count = 1 + Math.floor(random() * 6);
    const [spec, images] = podSpec(random, app, count, 'Always');
    const name = `${app}-7d9f8c6b5-${Math.floor(random() * 1e5).toString(36)}`;
    const meta = metadata(random, name, namespace, app, api);
    meta.generateName = `${app}-7d9f8c6b5-`;
    meta.ownerReferences = [{
      apiVersion: 'apps/v1', kind: 'ReplicaSet', name: `${app}-7d9f8c6b5`,
      uid: '3a1e5b7c-9d2f-4e6a-8b0c-1d3e5f7a9b2c', controller: true, blockOwnerDeletion: true,
    }];
    return [{ kind, apiVersion: api, metadata: meta, spec, status: {} }, images, name];
  }
  if (kind === 'Deployment') {
    const [spec, images] = podSpec(random, app, 1 + Math.floor(random() * 3), 'Always');
    const meta = metadata(random, app, namespace, app, api);
    return [{
      kind, apiVersion: api, metadata: meta,
      spec: {
        replicas: 1 + Math.floor(random() * 5),
        selector: { matchLabels: { app } },
        template: { metadata: { creationTimestamp: null, labels: { app } }, spec },
        strategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '25%', maxSurge: '25%' } },
        revisionHistoryLimit: 10,
        progressDeadlineSeconds: 600,
      },
      status: {},
    }, images, app];
  }
  const [spec, images] = podSpec(random, app, 1 + Math.floor(random() * 2), 'OnFailure');
  const name = `${app}-nightly`;
  const meta = metadata(random, name, namespace, app, api);
  return [{
    kind, apiVersion: api, metadata: meta,
    spec: {
      schedule: '17 3 * * *',
      concurrencyPolicy: 'Forbid',
      suspend: false,
      successfulJobsHistoryLimit: 3,
      failedJobsHistoryLimit: 1,
      jobTemplate: {
        metadata: { creationTimestamp: null },
        spec: { backoffLimit: 6, template: { metadata: { creationTimestamp: null, labels: { app } }, spec } },
      },
    },
    status: {},
  }, images, name];
}

// Kind mix of pod churn: mostly Pods (ReplicaSets scaling), then Deployments
// (rollouts) and CronJobs.
function kindOf(random) {
  const r = random();
  if (r < 0.6) return 'Pod';
  if (r < 0.85) return 'Deployment';
  return 'CronJob';
}

// One review: { body, swaps, unique } where `body` holds UID_MARK (and
// UNIQUE_TAG when `unique`), and `swaps` is how many patch operations the
// load tests' maps file produces.
export function review(random) {
  const kind = kindOf(random);
  const app = pick(random, APPS);
  const namespace = pick(random, NAMESPACES);
  const [obj, images, name] = object(random, kind, app, namespace);
  const k = KINDS[kind];
  const gvk = { group: k.group, version: k.version, kind };
  const gvr = { group: k.group, version: k.version, resource: k.resource };
  const doc = {
    kind: 'AdmissionReview',
    apiVersion: 'admission.k8s.io/v1',
    request: {
      uid: UID_MARK,
      kind: gvk,
      resource: gvr,
      requestKind: gvk,
      requestResource: gvr,
      name: kind === 'Pod' ? '' : name,
      namespace,
      operation: 'CREATE',
      userInfo: {
        username: kind === 'Pod' ? 'system:serviceaccount:kube-system:replicaset-controller' : 'kubernetes-admin',
        uid: '6b2f7c1e-2b4e-4f1a-8c3d-9e0f1a2b3c4d',
        groups: ['system:serviceaccounts', 'system:serviceaccounts:kube-system', 'system:authenticated'],
      },
      object: obj,
      oldObject: null,
      dryRun: false,
      options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1', fieldManager: 'kubectl-client-side-apply' },
    },
  };
  const body = JSON.stringify(doc);
  return {
    body,
    swaps: images.filter(([, swapped]) => swapped).length,
    unique: body.includes(UNIQUE_TAG),
  };
}

// `count` reviews from `seed`.
export function reviews(count, seed) {
  const random = rng(seed);
  const out = [];
  for (let i = 0; i < count; i++) out.push(review(random));
  return out;
}
