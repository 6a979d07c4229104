// The prototype's three booking scenarios, as k6 scenarios:
//   normal_load        many users booking different seats at a steady pace
//   thundering_herd    many users asking for the same popular seat at once
//   high_concurrency   many users, many seats, a ramping arrival rate
//
//   k6 run -e BASE_URL=http://localhost:8080 -e TOKENS_FILE=tokens.txt load-testing/booking-load-test.js
//   k6 run -e SCENARIO=thundering_herd -e HERD_USERS=2000 ... load-testing/booking-load-test.js
//
// TOKENS_FILE: bearer tokens, one per line (`herdgate token --user 2 --count 20000 > tokens.txt`);
// without it, each virtual user logs in once as userN@load.test. Every request carries an
// Idempotency-Key, so a retry never holds twice. 201 and 409 are both correct answers and are
// counted apart; errors are everything else.
import http from 'k6/http';
import { check } from 'k6';
import { Counter, Rate } from 'k6/metrics';
import exec from 'k6/execution';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const EVENT_ID = Number(__ENV.EVENT_ID || 1);
const SEATS = Number(__ENV.SEATS || 50000);
const HERD_SEAT = Number(__ENV.HERD_SEAT || 1);
const NORMAL_USERS = Number(__ENV.NORMAL_USERS || 100);
const HERD_USERS = Number(__ENV.HERD_USERS || 1000);
const PEAK_RATE = Number(__ENV.PEAK_RATE || 2000);
const TOKENS = __ENV.TOKENS_FILE ? open(__ENV.TOKENS_FILE).split('\n').filter((t) => t) : [];

const created = new Counter('bookings_created');
const taken = new Counter('bookings_taken');
const limited = new Counter('bookings_limited');
const errors = new Rate('booking_errors');

const scenarios = {
  normal_load: {
    executor: 'constant-vus',
    exec: 'normalLoad',
    vus: NORMAL_USERS,
    duration: __ENV.NORMAL_DURATION || '30s',
  },
  thundering_herd: {
    executor: 'per-vu-iterations',
    exec: 'thunderingHerd',
    vus: HERD_USERS,
    iterations: 1,
    maxDuration: '60s',
    startTime: __ENV.SCENARIO ? '0s' : '35s',
  },
  high_concurrency: {
    executor: 'ramping-arrival-rate',
    exec: 'highConcurrency',
    startRate: 100,
    timeUnit: '1s',
    preAllocatedVUs: 500,
    maxVUs: 5000,
    stages: [
      { target: PEAK_RATE, duration: '20s' },
      { target: PEAK_RATE, duration: '20s' },
      { target: 0, duration: '10s' },
    ],
    startTime: __ENV.SCENARIO ? '0s' : '100s',
  },
};

export const options = {
  scenarios: __ENV.SCENARIO ? { [__ENV.SCENARIO]: scenarios[__ENV.SCENARIO] } : scenarios,
  thresholds: {
    booking_errors: ['rate<0.01'],
    'http_req_duration{scenario:normal_load}': ['p(95)<300'],
    'http_req_duration{scenario:thundering_herd}': ['p(99)<1000'],
    'http_req_duration{scenario:high_concurrency}': ['p(95)<500'],
  },
};

http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409, 429));

const bearers = {};

function bearer() {
  const vu = exec.vu.idInTest;
  if (TOKENS.length > 0) {
    return TOKENS[(vu - 1) % TOKENS.length];
  }
  if (!bearers[vu]) {
    const res = http.post(
      `${BASE_URL}/api/users/login`,
      JSON.stringify({ email: `user${vu}@load.test`, password: 'password' }),
      { headers: { 'Content-Type': 'application/json' } },
    );
    bearers[vu] = res.json('token');
  }
  return bearers[vu];
}

function book(seat) {
  const res = http.post(
    `${BASE_URL}/api/bookings`,
    JSON.stringify({ eventId: EVENT_ID, seatId: seat }),
    {
      headers: {
        'Content-Type': 'application/json',
        Authorization: `Bearer ${bearer()}`,
        'Idempotency-Key': `${exec.scenario.name}-${exec.vu.idInTest}-${exec.scenario.iterationInTest}`,
      },
    },
  );
  const ok = res.status === 201 || res.status === 409 || res.status === 429;
  check(res, { 'answered 201, 409 or 429': () => ok });
  if (res.status === 201) created.add(1);
  if (res.status === 409) taken.add(1);
  if (res.status === 429) limited.add(1);
  errors.add(!ok);
  return res;
}

export function normalLoad() {
  book(1 + Math.floor(Math.random() * SEATS));
}

export function thunderingHerd() {
  book(HERD_SEAT);
}

export function highConcurrency() {
  book(1 + ((exec.scenario.iterationInTest * 7919) % SEATS));
}
