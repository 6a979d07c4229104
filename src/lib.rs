//! herdgate: a ticket-booking gateway built for the thundering herd.
//!
//! Words used throughout, one meaning each:
//!
//! - **event**: what is on sale (a concert), with its seats; its status is
//!   SCHEDULED, ON_SALE or CLOSED ([`status::EventStatus`]). Never a hold event.
//! - **booking**: one user's claim on one seat, with a UUIDv7 id that carries its
//!   event ([`booking_id`]); PENDING, then CONFIRMED, CANCELLED or EXPIRED
//!   ([`status::BookingStatus`]). PostgreSQL's `bookings` row is its record.
//! - **hold**: a booking as Redis has it: the seat's lock naming it and its state.
//!   `POST /api/bookings` places a hold (PENDING, until its expiry); confirming
//!   keeps it, cancelling or expiring releases the seat. Hence `place_hold`,
//!   `confirm_hold`, `cancel_hold`, `expire_hold` for the Redis steps, and
//!   `bookings` for what the API answers about bookings.
//! - **hold event**: one change of a booking (`hold.placed`, `hold.confirmed`,
//!   `hold.cancelled`, `hold.expired`) on its way from the outbox through RabbitMQ
//!   to the writer ([`hold_event`]).
//! - **admission**: a buyer's leave, from an event's waiting room, to hold its seats
//!   for a while ([`waiting_room`]); an event without a waiting room admits every
//!   buyer. `GET /waiting-room` says per event whether it is open to buyers now.
//! - **load**: the load generator only; the in-flight bound on requests is
//!   [`waiting_room::InFlight`].
//!
//! The crate's layout, one line per module saying what it owns (each module's
//! own `//!` paragraph says more). `main.rs` only parses the command line, sets
//! up telemetry, reads the configuration and runs the subcommand.
//!
//! - [`cli`]: the command line: one binary, a subcommand per job.
//! - [`config`]: configuration from the environment, one `ENV_*` constant per variable.
//! - [`telemetry`]: logs, set up once per process (`RUST_LOG`; JSON when not a
//!   terminal), and traces over OTLP when a collector is configured: `export` (the
//!   `OTEL_*` variables and the SDK pipeline), `sampling` (the head decision),
//!   `spans` (every exported span), `context` (W3C traceparent in and out).
//! - [`shutdown`]: the stop signal: SIGINT or SIGTERM.
//! - [`serve`]: running herdgate: the `serve`, `gateway` and `writer` roles, each
//!   wiring its parts into one process.
//! - [`app`]: the state every request shares: clients of the three backends and the
//!   parts built on them, and whether each backend is ready.
//! - [`http`]: the HTTP/1.1 server: the hyper-util accept loop with connection limits
//!   and graceful shutdown; `idle` (a connection's idle deadline), `router` (a request
//!   line to a route, by hand; the endpoint list), `dispatch` (one request through:
//!   admitted, handled, counted, traced), `api` (one handler module per resource:
//!   `bookings`, `events`, `seats`, `users`, `waiting_room`, `ops`), `request` (the
//!   bearer token's user, the trace context), `body` (size limit while reading, slow
//!   senders time out, JSON errors as 400), `query` (query strings and path ids to
//!   numbers, or a 400 naming the parameter), `response` (JSON answers), `problem`
//!   (problem documents, RFC 9457: every error answer and every mapping of an error
//!   to one is there).
//! - [`auth`]: argon2 password checks at login, and HS256 bearer tokens.
//! - [`operator`]: the operator's bearer secret (`HERDGATE_OPERATOR_TOKEN`), checked
//!   in constant time, for changing waiting rooms at run time.
//! - [`users`]: which user ids PostgreSQL knows, so a hold is acknowledged only for a
//!   user its booking row can reference.
//! - [`rate_limit`]: login attempts per client address and per account.
//! - [`catalog`]: the read side: events and their available seats.
//! - [`flight`]: a short-lived, single-flight, bounded cache for hot reads, so a herd
//!   of identical reads costs one backend call.
//! - [`bookings`]: placing holds (`POST /api/bookings`: validate, then one Redis script
//!   call), reading, confirming and cancelling bookings.
//! - [`coalesce`]: coalescing the herd: concurrent holds of one seat share one Redis call.
//! - [`booking_id`]: booking ids: UUIDv7 carrying their event.
//! - [`holds`]: Redis, and the only code that sends it a command: the Lua scripts in
//!   `lua/` (one typed call each, run by EVALSHA with reload); `keys` (key names and
//!   hash fields, decided there and nowhere else), `reads` (seats, events and
//!   bookings), `transitions` (every change of a hold: place, confirm, cancel,
//!   expire), `inventory` (loading an event's seats, restored holds), `outbox` (the
//!   outbox stream and the relay's consumer group), `queue` (an event's waiting room:
//!   its settings and a buyer's visit), `loaded` (the watched events,
//!   visited pipelined: statuses, first due times), `activity` (the channel saying
//!   which events have work), `masters` (on a Redis Cluster, each event's commands
//!   sent to its master over connections of that master's own).
//! - [`inventory`]: which events are on sale, loaded from PostgreSQL into Redis with
//!   their waiting rooms' settings, and nudged syncs; `restore` (live bookings put back into a rebuilt Redis, and the
//!   catch-ups after it).
//! - [`waiting_room`]: admission: whether an event lets buyers in, and how loaded this
//!   gateway is; `queue` (a buyer's place in an event's waiting room, as answered),
//!   `settings` (a room's settings in PostgreSQL, and the operator's changes to them,
//!   applied in Redis at once), `proof` (proof of work at join), `page` (the HTML page
//!   a browser is served at the room's address).
//! - [`status`]: the statuses of bookings, seats and events, one enum each.
//! - [`hold_event`]: the hold event and the batch (schema 2): outbox entry, RabbitMQ
//!   message, writer input.
//! - [`relay`]: hold events from each event's Redis outbox to RabbitMQ, deleted only
//!   after the broker confirmed them.
//! - [`broker`]: RabbitMQ: the connection and the topology.
//! - [`writer`]: RabbitMQ to PostgreSQL in batches, ack after commit, dead-lettering;
//!   `apply` (a batch in one transaction, idempotently and in any order).
//! - [`sweeper`]: releases holds whose time is up.
//! - [`retry`]: keeping a background worker alive: sessions restarted with backoff.
//! - [`metric`]: every metric's name, and the recorder that `GET /metrics` renders in
//!   Prometheus's text format.
//! - [`check`]: `herdgate check`: Redis reconciled with PostgreSQL, seat by seat.
//! - [`migrate`]: schema migrations from `migrations/`, applied in order by refinery.
//! - [`seed`]: demo data from `seed/events.json`.
//! - [`limits`]: the open-files limit, raised for thousands of sockets.
//! - [`load`]: `herdgate load`, which runs the load generator: the `herdgate-load`
//!   crate in `load-testing/herdgate-load/` (a client of this library, never the
//!   other way round), with its own module list.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod booking_id;
pub mod bookings;
pub mod broker;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod coalesce;
pub mod config;
pub mod flight;
pub mod hold_event;
pub mod holds;
pub mod http;
pub mod inventory;
pub mod limits;
pub mod load;
pub mod metric;
pub mod migrate;
pub mod operator;
pub mod rate_limit;
pub mod relay;
pub mod retry;
pub mod seed;
pub mod serve;
pub mod shutdown;
pub mod status;
pub mod sweeper;
pub mod telemetry;
pub mod users;
pub mod waiting_room;
pub mod writer;
