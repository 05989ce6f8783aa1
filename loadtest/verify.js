// k6 load test of mirror verification (`imageswap serve` with
// IMAGESWAP_VERIFY=on): posts one-container Pod AdmissionReviews over HTTPS
// and checks every answer against what the mirror holds.
//
// Run it through `loadtest/verify.sh churn|dead-mirror|burst`, which starts
// the registry, the mirror in front of it and the server, and sets:
//   TARGET        https://127.0.0.1:PORT/ (loopback only)
//   SCENARIO      churn | dead-mirror | burst
//   BURST         burst: admissions sent at once, one per VU, each a Pod of
//                 two new images (tags 2v and 2v+1 of VU v; 1000: 2,000 images)
//   RATE          admissions per second (constant arrival rate)
//   DURATION      k6 duration
//   MIRROR        host:port the maps file swaps src.example.com to
//   IMAGES        distinct image tags, src.example.com/churn/app:t0000 … (2000)
//   MISSING_EVERY tag n is missing from the mirror when n % MISSING_EVERY ==
//                 MISSING_EVERY - 1 (20: 5% missing)
//   ON_ERROR      dead-mirror: the server's IMAGESWAP_VERIFY_ON_ERROR, swap | keep
//   SUMMARY_FILE  where the end-of-test summary is written as JSON
//
// Each answer must be a 200 echoing the uid, allowed, and:
//   churn: a present image replaced by MIRROR/churn/app:tNNNN and no warning;
//          a missing one unpatched with the `kept …: … is not in the mirror` warning.
//   burst: each image swapped to the mirror, verified (no warning) or not
//          verified within the budget (`… not verified: timeout after 1s`,
//          counted in burst_unverified); never `circuit open` (the mirror is
//          healthy: a queued check is no evidence against it).
//   dead-mirror: swapped (ON_ERROR=swap, warning `… not verified: <reason>`) or
//          kept (ON_ERROR=keep, warning `kept …: <reason>`); the reason is a
//          timeout while the breaker is closed, `circuit open` once it opens.
// Any miss counts in `request_errors` (threshold: zero). The admission
// duration is also recorded per reason (wait_timeout_ms, wait_circuit_ms,
// wait_other_ms) so the report can give p99 before and after the breaker opens,
// and for churn per window (window_cold_ms: the first 10 s, when most images
// are new; window_warm_ms: the rest).

import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter, Trend } from 'k6/metrics';
import exec from 'k6/execution';

const SCENARIO = __ENV.SCENARIO || 'churn';
const TARGET = __ENV.TARGET || 'https://127.0.0.1:8443/';
const MIRROR = __ENV.MIRROR || '127.0.0.1:5000';
const num = (name, fallback) => (__ENV[name] ? Number(__ENV[name]) : fallback);
const IMAGES = num('IMAGES', 2000);
const MISSING_EVERY = num('MISSING_EVERY', 20);
const ON_ERROR = __ENV.ON_ERROR || 'swap';
const SOURCE = 'src.example.com/churn/app';

const requestErrors = new Counter('request_errors');
const swapped = new Counter('images_swapped');
const kept = new Counter('images_kept');
const waitTimeout = new Trend('wait_timeout_ms', true);
const waitCircuit = new Trend('wait_circuit_ms', true);
// dead-mirror: "circuit open" answers of the first CIRCUIT_EARLY_SECONDS:
// admissions whose check was queued behind the cap when the breaker opened
// (they waited until it did, less than the timeout), apart from the ones
// answered at once by the open breaker.
const waitCircuitEarly = new Trend('wait_circuit_early_ms', true);
const CIRCUIT_EARLY_SECONDS = 2;
const waitOther = new Trend('wait_other_ms', true);
// churn: admissions of the first COLD_SECONDS (most images new) and after.
const windowCold = new Trend('window_cold_ms', true);
const windowWarm = new Trend('window_warm_ms', true);
const COLD_SECONDS = 10;

const HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json' };
const rate = num('RATE', SCENARIO === 'churn' ? 500 : 200);
const BURST = num('BURST', 1000);
const burstVerified = new Counter('burst_verified');
const burstUnverified = new Counter('burst_unverified');
const burstCircuit = new Counter('burst_circuit_open');

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(99)', 'count'],
  scenarios: SCENARIO === 'burst' ? {
    burst: { executor: 'per-vu-iterations', vus: BURST, iterations: 1, maxDuration: '60s' },
  } : {
    [SCENARIO]: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || (SCENARIO === 'churn' ? '60s' : '30s'),
      // A dead mirror holds each admission of the first breaker period for
      // the verify timeout: VUs for more than a second of arrivals waiting at
      // once, started before the run (k6 adds VUs slowly, dropping arrivals).
      preAllocatedVUs: SCENARIO === 'churn' ? Math.max(20, Math.ceil(rate / 10)) : Math.ceil(rate * 1.5) + 20,
      maxVUs: Math.max(200, rate * 2),
    },
  },
  thresholds: { request_errors: ['count==0'], http_req_failed: ['rate==0'] },
};

// A Pod as kube-apiserver sends it (trimmed to what a review of one container needs).
const TEMPLATE = JSON.stringify({
  kind: 'AdmissionReview',
  apiVersion: 'admission.k8s.io/v1',
  request: {
    uid: '@@UID@@',
    kind: { group: '', version: 'v1', kind: 'Pod' },
    resource: { group: '', version: 'v1', resource: 'pods' },
    requestKind: { group: '', version: 'v1', kind: 'Pod' },
    requestResource: { group: '', version: 'v1', resource: 'pods' },
    name: 'churn',
    namespace: 'batch',
    operation: 'CREATE',
    userInfo: { username: 'system:serviceaccount:kube-system:job-controller', groups: ['system:authenticated'] },
    object: {
      kind: 'Pod',
      apiVersion: 'v1',
      metadata: { namespace: 'batch', generateName: 'churn-', labels: { app: 'churn' } },
      spec: {
        containers: [{
          name: 'app',
          image: '@@IMAGE@@',
          resources: { requests: { cpu: '100m', memory: '64Mi' } },
          terminationMessagePath: '/dev/termination-log',
          terminationMessagePolicy: 'File',
          imagePullPolicy: 'IfNotPresent',
        }],
        restartPolicy: 'Never',
        serviceAccountName: 'default',
        schedulerName: 'default-scheduler',
      },
      status: { phase: 'Pending' },
    },
    oldObject: null,
    dryRun: false,
    options: { kind: 'CreateOptions', apiVersion: 'meta.k8s.io/v1' },
  },
});

const RUN = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');
let sent = 0;
const hex = (n, width) => n.toString(16).padStart(width, '0');

function tag(n) {
  return `t${String(n).padStart(4, '0')}`;
}

export default function () {
  if (SCENARIO === 'burst') {
    burst();
    return;
  }
  sent += 1;
  // Uniformly random over the set: every tag is first seen somewhere in the
  // run (not all in the first seconds), as new images arrive in a cluster.
  const n = Math.floor(Math.random() * IMAGES);
  const image = `${SOURCE}:${tag(n)}`;
  const uid = `${RUN}-${hex(__VU & 0xffff, 4)}-4${hex((sent >>> 24) & 0xfff, 3)}-8000-${hex(sent & 0xffffff, 12)}`;
  const body = TEMPLATE.replace('@@UID@@', uid).replace('@@IMAGE@@', image);
  const res = http.post(TARGET, body, { headers: HEADERS, timeout: '10s' });
  verify(res, uid, n, image);
}

// One Pod of two images nobody asked for before (tags 2v and 2v+1).
function burst() {
  const v = exec.vu.idInTest - 1;
  const tags = [tag(2 * v), tag(2 * v + 1)];
  const review = JSON.parse(TEMPLATE.replace('@@UID@@', `${RUN}-burst-${v}`).replace('@@IMAGE@@', `${SOURCE}:${tags[0]}`));
  const second = Object.assign({}, review.request.object.spec.containers[0], { name: 'side', image: `${SOURCE}:${tags[1]}` });
  review.request.object.spec.containers.push(second);
  const res = http.post(TARGET, JSON.stringify(review), { headers: HEADERS, timeout: '10s' });
  let answer = null;
  try {
    answer = res.status === 200 ? JSON.parse(res.body).response : null;
  } catch (_) {
    answer = null;
  }
  let ops = [];
  try {
    ops = JSON.parse(encoding.b64decode(answer.patch, 'std', 's'));
  } catch (_) {
    ops = [];
  }
  const warnings = (answer && answer.warnings) || [];
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    allowed: () => !!answer && answer.allowed === true,
    'both images swapped to the mirror': () => tags.every((t, i) =>
      ops.some((op) => op.path === `/spec/containers/${i}/image` && op.value === `${MIRROR}/churn/app:${t}`)),
    'warnings only for unverified images, never circuit open': () =>
      warnings.every((w) => w.includes(' not verified: timeout')),
  });
  if (!ok) requestErrors.add(1);
  if (warnings.some((w) => w.endsWith('circuit open'))) burstCircuit.add(1);
  const unverified = warnings.filter((w) => w.includes(' not verified: ')).length;
  burstUnverified.add(unverified);
  burstVerified.add(2 - unverified);
}

function patchValue(answer) {
  try {
    const ops = JSON.parse(encoding.b64decode(answer.patch, 'std', 's'));
    // The replace, then the original-images record (an `add`).
    const replaces = ops.filter((op) => op.op !== 'add');
    return replaces.length === 1 && replaces[0].op === 'replace' && replaces[0].path === '/spec/containers/0/image'
      ? replaces[0].value
      : null;
  } catch (_) {
    return null;
  }
}

function verify(res, uid, n, image) {
  let answer = null;
  if (res.status === 200) {
    try {
      answer = JSON.parse(res.body).response || null;
    } catch (_) {
      answer = null;
    }
  }
  const target = `${MIRROR}/churn/app:${tag(n)}`;
  const patched = !!answer && typeof answer.patch === 'string' ? patchValue(answer) : null;
  const warnings = (answer && answer.warnings) || [];
  const warning = warnings.length === 1 ? warnings[0] : '';
  let expectSwap;
  let expectWarning;
  if (SCENARIO === 'churn') {
    const missing = n % MISSING_EVERY === MISSING_EVERY - 1;
    expectSwap = !missing;
    expectWarning = missing ? `imageswap: kept ${image}: ${target} is not in the mirror` : null;
  } else {
    expectSwap = ON_ERROR === 'swap';
    expectWarning = expectSwap ? `imageswap: ${target} not verified: ` : `imageswap: kept ${image}: `;
  }
  const ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'uid echoed': () => !!answer && answer.uid === uid,
    allowed: () => !!answer && answer.allowed === true,
    'present image swapped to the mirror, missing one kept': () =>
      !!answer && (expectSwap ? patched === target : answer.patch === undefined),
    'the warning, exactly when due': () =>
      expectWarning === null ? warnings.length === 0 : warning.startsWith(expectWarning),
  });
  if (!ok) {
    requestErrors.add(1);
    return;
  }
  (expectSwap ? swapped : kept).add(1);
  if (SCENARIO === 'churn') {
    const t = (Date.now() - exec.scenario.startTime) / 1000;
    (t < COLD_SECONDS ? windowCold : windowWarm).add(res.timings.duration);
  } else {
    const ms = res.timings.duration;
    const t = (Date.now() - exec.scenario.startTime) / 1000;
    if (warning.endsWith('circuit open')) (t < CIRCUIT_EARLY_SECONDS ? waitCircuitEarly : waitCircuit).add(ms);
    else if (warning.includes('timeout')) waitTimeout.add(ms);
    else waitOther.add(ms);
  }
}

export function handleSummary(data) {
  const m = data.metrics;
  const v = (name, stat) => (m[name] && m[name].values[stat] !== undefined ? m[name].values[stat] : 0);
  const lines = [
    `scenario=${SCENARIO} requests=${v('http_reqs', 'count')} rate=${v('http_reqs', 'rate').toFixed(1)}/s`,
    `latency ms: p50=${v('http_req_duration', 'p(50)').toFixed(3)} p99=${v('http_req_duration', 'p(99)').toFixed(3)}` +
      ` max=${v('http_req_duration', 'max').toFixed(3)}`,
    `swapped=${v('images_swapped', 'count')} kept=${v('images_kept', 'count')}` +
      ` request_errors=${v('request_errors', 'count')} dropped_iterations=${v('dropped_iterations', 'count')}`,
  ];
  const out = { stdout: `${lines.join('\n')}\n` };
  if (__ENV.SUMMARY_FILE) out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 1);
  return out;
}
