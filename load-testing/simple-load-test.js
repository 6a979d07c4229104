// Read endpoints and single bookings, with thresholds on latency and errors.
//
//   k6 run -e BASE_URL=http://localhost:8080 -e TOKENS_FILE=tokens.txt load-testing/simple-load-test.js
//
// TOKENS_FILE: bearer tokens, one per line (`herdgate token --user 2 --count 1000 > tokens.txt`);
// without it, virtual users log in as the seeded load-test users (userN@load.test / password).
// A 409 (seat taken) is a correct answer under contention, not a failure.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const EVENT_ID = Number(__ENV.EVENT_ID || 1);
const SEATS = Number(__ENV.SEATS || 50000);
const VUS = Number(__ENV.VUS || 50);
const DURATION = __ENV.DURATION || '30s';
const TOKENS = __ENV.TOKENS_FILE ? open(__ENV.TOKENS_FILE).split('\n').filter((t) => t) : [];

const held = new Counter('holds_created');
const taken = new Counter('holds_taken');

export const options = {
  vus: VUS,
  duration: DURATION,
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{kind:read}': ['p(95)<200'],
    'http_req_duration{kind:book}': ['p(95)<300'],
    checks: ['rate>0.99'],
  },
};

// 409 is expected for bookings: only 5xx and unexpected 4xx count as failed requests.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409));

function token() {
  if (TOKENS.length > 0) {
    return TOKENS[(__VU - 1) % TOKENS.length];
  }
  const res = http.post(
    `${BASE_URL}/api/users/login`,
    JSON.stringify({ email: `user${__VU}@load.test`, password: 'password' }),
    { headers: { 'Content-Type': 'application/json' }, tags: { kind: 'login' } },
  );
  check(res, { 'login 200': (r) => r.status === 200 });
  return res.json('token');
}

let bearer;

export default function () {
  bearer = bearer || token();
  const event = http.get(`${BASE_URL}/api/events/${EVENT_ID}`, { tags: { kind: 'read' } });
  check(event, { 'event 200': (r) => r.status === 200 });
  const seats = http.get(`${BASE_URL}/api/seats/available?eventId=${EVENT_ID}&limit=50`, {
    tags: { kind: 'read' },
  });
  check(seats, { 'seats 200': (r) => r.status === 200 });

  const seat = 1 + Math.floor(Math.random() * SEATS);
  const res = http.post(
    `${BASE_URL}/api/bookings`,
    JSON.stringify({ eventId: EVENT_ID, seatId: seat }),
    {
      headers: {
        'Content-Type': 'application/json',
        Authorization: `Bearer ${bearer}`,
        'Idempotency-Key': `simple-${__VU}-${__ITER}`,
      },
      tags: { kind: 'book' },
    },
  );
  check(res, { 'booking 201 or 409': (r) => r.status === 201 || r.status === 409 });
  if (res.status === 201) held.add(1);
  if (res.status === 409) taken.add(1);
  sleep(0.1);
}
