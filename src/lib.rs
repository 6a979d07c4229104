//! herdgate: a ticket-booking gateway built for the thundering herd.
//!
//! - [`http`]: the lean hyper server: accept loop, routing, problem documents.
//! - [`catalog`]: the read side (events, available seats), served from Redis behind a
//!   short single-flight cache so a herd of identical reads costs one Redis call.
//! - [`auth`]: argon2 password checks and signed bearer tokens; [`users`]: which user
//!   ids exist; [`rate_limit`]: login attempts per account and per client.
//! - [`holds`]: Redis key layout and the Lua scripts, one typed call per `lua/*.lua`.
//! - [`inventory`]: loads each on-sale event's seats from PostgreSQL into Redis.
//! - [`relay`], [`writer`]: hold events from the Redis outbox to RabbitMQ, then PostgreSQL.
//! - [`sweeper`]: releases holds whose time is up.
//! - [`waiting_room`]: admission state per event.
//! - [`migrate`], [`seed`]: schema and demo data; [`check`]: Redis against PostgreSQL.
//! - [`serve`]: wires the parts into one process.
//! - [`load`]: the load generator (`herdgate load`), with its invariant checks.
//! - [`telemetry`]: logs, and traces over OTLP when a collector is configured.
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
pub mod migrate;
pub mod prometheus;
pub mod rate_limit;
pub mod relay;
pub mod retry;
pub mod seed;
pub mod serve;
pub mod shutdown;
pub mod sweeper;
pub mod telemetry;
pub mod users;
pub mod waiting_room;
pub mod writer;
