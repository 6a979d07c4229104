// Buyers of an event behind a waiting room: each virtual user joins, looks again
// every pollAfterSeconds the server says, and once admitted holds a seat and
// confirms it (which ends the admission and frees the slot); a share walk away,
// half while in line (the place lapses after the grace period), half once admitted
// without booking (the admission idles out).
//
//   k6 run -e BASE_URL=http://localhost:8080 -e TOKENS_FILE=tokens.txt load-testing/waiting-room.js
//
// TOKENS_FILE: bearer tokens, one per line (`herdgate token --user 2 --count 5000 > tokens.txt`),
// one virtual user each; without it, virtual users log in as userN@load.test.
// EVENT_ID (5: the seed's demo room), BUYERS (VUs, 1,000), RAMP (all joined within, 10s),
// DURATION (each buyer's time in the room at most, 5m), LEAVE (0.1).
// Every buyer comes from one address here: start the gateway with a high
// HERDGATE_ROOM_CLIENT_RATE, or the per-address limit answers 429.
// The room's own rate is in GET /waiting-room/:id/stats (admitted, measuredRate);
// `herdgate load waiting-room` samples it and measures admissions a second.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://localhost:8080';
const EVENT_ID = Number(__ENV.EVENT_ID || 5);
const BUYERS = Number(__ENV.BUYERS || 1000);
const RAMP = __ENV.RAMP || '10s';
const DURATION = __ENV.DURATION || '5m';
const LEAVE = Number(__ENV.LEAVE || 0.1);
const TOKENS = __ENV.TOKENS_FILE ? open(__ENV.TOKENS_FILE).split('\n').filter((t) => t) : [];

const admitted = new Counter('room_admitted');
const confirmed = new Counter('room_confirmed');
const walkedInLine = new Counter('room_walked_in_line');
const walkedAdmitted = new Counter('room_walked_admitted');
const lost = new Counter('room_lost_place');
const wait = new Trend('room_wait_seconds');

export const options = {
  scenarios: {
    buyers: {
      executor: 'per-vu-iterations',
      vus: BUYERS,
      iterations: 1,
      maxDuration: DURATION,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{kind:visit}': ['p(99)<250'],
    room_lost_place: ['count==0'],
  },
};

// 409 (seat taken) and 429 (come back later) are answers, not failures.
http.setResponseCallback(http.expectedStatuses({ min: 200, max: 299 }, 409, 429));

function token() {
  if (TOKENS.length > 0) return TOKENS[(__VU - 1) % TOKENS.length];
  const res = http.post(
    `${BASE_URL}/api/users/login`,
    JSON.stringify({ email: `user${__VU}@load.test`, password: 'password' }),
    { headers: { 'Content-Type': 'application/json' }, tags: { kind: 'login' } },
  );
  check(res, { 'login 200': (r) => r.status === 200 });
  return res.json('token');
}

function visit(bearer, join) {
  const params = { headers: { Authorization: `Bearer ${bearer}` }, tags: { kind: 'visit' } };
  return join
    ? http.post(`${BASE_URL}/waiting-room/${EVENT_ID}/join`, null, params)
    : http.get(`${BASE_URL}/waiting-room/${EVENT_ID}`, params);
}

// Holds a free seat from a page of them (another after each 409) and confirms it.
function book(bearer) {
  const headers = { Authorization: `Bearer ${bearer}`, 'Content-Type': 'application/json' };
  for (let tries = 0; tries < 20; tries++) {
    const page = http.get(`${BASE_URL}/api/seats/available?eventId=${EVENT_ID}&limit=50`, {
      tags: { kind: 'seats' },
    });
    const seats = page.status === 200 ? page.json('seats') : [];
    if (seats.length === 0) return true; // sold out
    const seat = seats[Math.floor(Math.random() * seats.length)].id;
    const res = http.post(
      `${BASE_URL}/api/bookings`,
      JSON.stringify({ eventId: EVENT_ID, seatId: seat }),
      { headers: Object.assign({ 'Idempotency-Key': `room-${__VU}-${tries}` }, headers), tags: { kind: 'book' } },
    );
    if (res.status === 409) continue; // taken meanwhile
    if (res.status === 403) return false; // the admission ended: queue again
    if (res.status !== 201 && res.status !== 200) return true;
    const done = http.post(`${BASE_URL}/api/bookings/${res.json('bookingId')}/confirm`, null, {
      headers,
      tags: { kind: 'book' },
    });
    if (check(done, { 'confirmed 200': (r) => r.status === 200 })) confirmed.add(1);
    return true;
  }
  return true;
}

export default function () {
  const bearer = token();
  // Arrivals spread over RAMP.
  sleep((Math.random() * parseFloat(RAMP)) || 0);
  const roll = Math.random();
  const walkInLineAfter = roll < LEAVE / 2 ? 5 + Math.random() * 25 : Infinity;
  const walkWhenAdmitted = roll >= LEAVE / 2 && roll < LEAVE;
  const joinedAt = Date.now();
  let joined = false;
  for (;;) {
    const res = visit(bearer, !joined);
    if (res.status === 429 || res.status === 503) {
      sleep(Number(res.headers['Retry-After'] || 1));
      continue;
    }
    if (res.status === 404 && joined) {
      lost.add(1);
      joined = false;
      continue;
    }
    if (!check(res, { 'visit 200': (r) => r.status === 200 })) return;
    joined = true;
    const view = res.json();
    if (view.status === 'admitted') {
      admitted.add(1);
      wait.add((Date.now() - joinedAt) / 1000);
      if (walkWhenAdmitted) {
        walkedAdmitted.add(1);
        return;
      }
      if (book(bearer)) return;
      joined = false;
      continue;
    }
    if ((Date.now() - joinedAt) / 1000 > walkInLineAfter) {
      walkedInLine.add(1);
      return;
    }
    sleep(view.pollAfterSeconds);
  }
}
