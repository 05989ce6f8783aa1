// k6 load test of `imageswap serve`: posts AdmissionReviews over HTTPS (HTTP/2
// by ALPN, as kube-apiserver does) to one local server and checks every answer.
//
// Run it through `loadtest/run.sh SCENARIO`, which starts the server and sets:
//   TARGET        https://127.0.0.1:PORT/ (loopback only)
//   SCENARIO      smoke | steady | max | soak | reload | spike | compare
//   RATE          requests per second (steady, soak, reload, compare; spike's floor)
//   DURATION      how long a constant-rate scenario runs (k6 duration)
//   P99_MS        the p99 threshold of the scenario, in milliseconds
//   STEPS         max: the offered rates of the staircase, comma-separated, rising
//   STEP_SECONDS  max: how long each step lasts
//   SPIKE_RATE    spike: the peak rate
//   REVIEW_FILE   compare: one fixed review posted by every request
//   SUMMARY_FILE  where the end-of-test summary is written as JSON
//
// Each response must be a 200 whose AdmissionReview echoes the request's uid,
// allows it, and carries a JSONPatch exactly when loadtest/imageswap-maps.conf
// swaps one of the images (with as many operations as swapped containers,
// decoded in the smoke, reload and compare scenarios). Any miss counts in
// `request_errors`, which the zero-error thresholds watch.

import http from 'k6/http';
import encoding from 'k6/encoding';
import { check } from 'k6';
import { Counter } from 'k6/metrics';
import { SharedArray } from 'k6/data';
import exec from 'k6/execution';

import { reviews, UID_MARK } from './lib/reviews.js';
import { UNIQUE_TAG } from './lib/images.js';

const SCENARIO = __ENV.SCENARIO || 'smoke';
const TARGET = __ENV.TARGET || 'https://127.0.0.1:8443/';
const num = (name, fallback) => (__ENV[name] ? Number(__ENV[name]) : fallback);

// Distinct reviews built once and shared by the VUs.
const REVIEW_SET_SIZE = 512;
// Reviews each VU copies out of the shared set (a SharedArray element is
// decoded again on every access; a local copy is decoded once).
const REVIEWS_PER_VU = 32;
const REVIEW_SEED = 20261126;

const requestErrors = new Counter('request_errors');

const HEADERS = { 'Content-Type': 'application/json', Accept: 'application/json' };
// The API server's default webhook timeout.
const REQUEST_TIMEOUT = '10s';

// VUs for an arrival rate: enough for ~50 ms per iteration from the start
// (k6 starts more VUs slowly, dropping iterations meanwhile), room for
// ~200 ms. Each VU holds its own HTTP/2 connection.
function vus(rate) {
  return { preAllocatedVUs: Math.max(20, Math.ceil(rate / 20)), maxVUs: Math.max(100, Math.ceil(rate / 5)) };
}

function constant(rate, duration, extra) {
  return Object.assign({ executor: 'constant-arrival-rate', rate, timeUnit: '1s', duration }, vus(rate), extra || {});
}

// `max`: the staircase of offered rates, and how long each step lasts.
const STEPS = (__ENV.STEPS || '250,500,1000,1500,2000,2500,3000,3500,4000,5000,6000').split(',').map(Number);
const STEP_SECONDS = num('STEP_SECONDS', 10);

// The step a `max` request belongs to: its rate, or 'ramp' between steps.
function stepTag() {
  const t = (Date.now() - exec.scenario.startTime) / 1000;
  const i = Math.floor(t / (STEP_SECONDS + 1));
  return i < STEPS.length && t - i * (STEP_SECONDS + 1) >= 1 ? String(STEPS[i]) : 'ramp';
}

const zeroErrors = { request_errors: ['count==0'], http_req_failed: ['rate==0'] };

function scenarioOptions() {
  const p99 = (fallback) => [`p(99)<${num('P99_MS', fallback)}`];
  switch (SCENARIO) {
    case 'smoke':
      return {
        scenarios: { smoke: constant(num('RATE', 200), __ENV.DURATION || '10s') },
        thresholds: zeroErrors,
      };
    case 'steady':
      return {
        scenarios: { steady: constant(num('RATE', 2000), __ENV.DURATION || '60s') },
        thresholds: Object.assign({ http_req_duration: p99(2) }, zeroErrors),
      };
    case 'soak':
      return {
        scenarios: { soak: constant(num('RATE', 2000), __ENV.DURATION || '10m') },
        thresholds: Object.assign({ http_req_duration: p99(10) }, zeroErrors),
      };
    case 'reload':
      // A new connection (and TLS handshake) per request, so rotated
      // certificates are served while the load runs.
      return {
        noVUConnectionReuse: true,
        scenarios: { reload: constant(num('RATE', 500), __ENV.DURATION || '60s') },
        thresholds: Object.assign({ http_req_duration: p99(50) }, zeroErrors),
      };
    case 'spike': {
      // From a quiet floor to the peak in two seconds, ten seconds there,
      // and back: nothing may fail, and p99 may rise but not explode.
      const floor = num('RATE', 300);
      const peak = num('SPIKE_RATE', 4000);
      return {
        scenarios: {
          spike: Object.assign({
            executor: 'ramping-arrival-rate',
            startRate: floor,
            timeUnit: '1s',
            stages: [
              { target: floor, duration: '10s' },
              { target: peak, duration: '2s' },
              { target: peak, duration: '10s' },
              { target: floor, duration: '2s' },
              { target: floor, duration: '10s' },
            ],
          }, vus(peak)),
        },
        thresholds: Object.assign({ http_req_duration: p99(100) }, zeroErrors),
      };
    }
    case 'compare':
      return {
        scenarios: { compare: constant(num('RATE', 3000), __ENV.DURATION || '20s') },
        thresholds: zeroErrors,
      };
    case 'max': {
      // One ramping arrival rate, climbing a staircase: one second to reach
      // each step, STEP_SECONDS on it. Requests on a step are tagged with its
      // rate; always-true thresholds on those tags put each step's figures
      // in the summary, from which report.py takes the highest step that
      // still holds p99 and zero errors at the offered rate.
      const stages = [];
      const thresholds = {};
      STEPS.forEach((rate) => {
        stages.push({ target: rate, duration: '1s' }, { target: rate, duration: `${STEP_SECONDS}s` });
        thresholds[`http_req_duration{step:${rate}}`] = ['max>=0'];
        thresholds[`http_reqs{step:${rate}}`] = ['count>=0'];
        thresholds[`request_errors{step:${rate}}`] = ['count>=0'];
      });
      const top = Math.max(...STEPS);
      return {
        scenarios: {
          max: Object.assign({ executor: 'ramping-arrival-rate', startRate: STEPS[0], timeUnit: '1s', stages }, vus(top)),
        },
        thresholds,
      };
    }
    default:
      throw new Error(`unknown SCENARIO ${SCENARIO}`);
  }
}

export const options = Object.assign(
  {
    summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(99)', 'count'],
    discardResponseBodies: false,
    // A fresh set of VUs per step must not wait for a slow teardown.
    setupTimeout: '30s',
  },
  scenarioOptions(),
);

const FULL_CHECKS = ['smoke', 'reload', 'compare'].includes(SCENARIO);

// The fixed review of `compare`, or the generated set.
const FIXED = __ENV.REVIEW_FILE ? open(__ENV.REVIEW_FILE) : null;
const SHARED = FIXED ? null : new SharedArray('reviews', () => reviews(REVIEW_SET_SIZE, REVIEW_SEED));

function localReviews() {
  if (FIXED) {
    const doc = JSON.parse(FIXED);
    return [{ fixed: true, body: FIXED, uid: doc.request.uid, swaps: num('EXPECT_SWAPS', 0), unique: false }];
  }
  const out = [];
  // __VU is 0 in the init context run that reads `options`.
  const start = (__VU * REVIEWS_PER_VU) % REVIEW_SET_SIZE;
  for (let i = 0; i < REVIEWS_PER_VU; i++) out.push(SHARED[(start + i) % REVIEW_SET_SIZE]);
  return out;
}
const LOCAL = localReviews();

// Unique per run, VU and iteration; shaped like a Kubernetes uid.
const RUN = Math.floor(Math.random() * 0xffffffff).toString(16).padStart(8, '0');
let sent = 0;

function hex(n, width) {
  return n.toString(16).padStart(width, '0');
}

export default function () {
  const template = LOCAL[sent % LOCAL.length];
  sent += 1;
  let body = template.body;
  let uid = template.uid;
  if (!template.fixed) {
    uid = `${RUN}-${hex(__VU & 0xffff, 4)}-4${hex((sent >>> 24) & 0xfff, 3)}-8000-${hex(sent & 0xffffff, 12)}`;
    body = body.replace(UID_MARK, uid);
    if (template.unique) body = body.split(UNIQUE_TAG).join(`${RUN}-${__VU}-${sent}`);
  }
  const tags = SCENARIO === 'max' ? { step: stepTag() } : {};
  const res = http.post(TARGET, body, { headers: HEADERS, timeout: REQUEST_TIMEOUT, tags });
  verify(res, uid, template.swaps, tags);
}

function verify(res, uid, swaps, tags) {
  let answer = null;
  if (res.status === 200) {
    try {
      answer = JSON.parse(res.body).response || null;
    } catch (_) {
      answer = null;
    }
  }
  const hasPatch = !!answer && answer.patchType === 'JSONPatch' && typeof answer.patch === 'string';
  let ok = check(res, {
    'status is 200': (r) => r.status === 200,
    'uid echoed': () => !!answer && answer.uid === uid,
    'allowed': () => !!answer && answer.allowed === true,
    'patch exactly when an image is swapped': () => !!answer && hasPatch === swaps > 0,
  });
  if (ok && hasPatch && FULL_CHECKS) {
    ok = check(answer, {
      // One replace per swapped container, then one `add` of the
      // original-images record on the pod template's metadata.
      'one patch operation per swapped container, then the record': (a) => {
        try {
          const ops = JSON.parse(encoding.b64decode(a.patch, 'std', 's'));
          if (!Array.isArray(ops) || ops.length !== swaps + 1) return false;
          const record = ops[swaps];
          return (
            ops.slice(0, swaps).every((op) => op.op === 'replace') &&
            record.op === 'add' &&
            /\/metadata(\/annotations(\/imageswap\.k8s\.twr\.io~1original-images)?)?$/.test(record.path)
          );
        } catch (_) {
          return false;
        }
      },
    });
  }
  if (!ok) requestErrors.add(1, tags);
}

// The whole summary as JSON for run.sh, and a short human one.
export function handleSummary(data) {
  const m = data.metrics;
  const v = (name, stat) => (m[name] && m[name].values[stat] !== undefined ? m[name].values[stat] : 0);
  const lines = [
    `scenario=${SCENARIO} requests=${v('http_reqs', 'count')} rate=${v('http_reqs', 'rate').toFixed(1)}/s`,
    `latency ms: p50=${v('http_req_duration', 'p(50)').toFixed(3)} p90=${v('http_req_duration', 'p(90)').toFixed(3)}` +
      ` p99=${v('http_req_duration', 'p(99)').toFixed(3)} max=${v('http_req_duration', 'max').toFixed(3)}`,
    `request_errors=${v('request_errors', 'count')} http_req_failed=${v('http_req_failed', 'passes')}` +
      ` dropped_iterations=${v('dropped_iterations', 'count')} checks_failed=${v('checks', 'fails')}`,
  ];
  for (const [name, metric] of Object.entries(m)) {
    if (metric.thresholds) {
      for (const [expr, t] of Object.entries(metric.thresholds)) {
        if (!t.ok) lines.push(`THRESHOLD FAILED: ${name} ${expr}`);
      }
    }
  }
  const out = { stdout: `${lines.join('\n')}\n` };
  if (__ENV.SUMMARY_FILE) out[__ENV.SUMMARY_FILE] = JSON.stringify(data, null, 1);
  return out;
}
