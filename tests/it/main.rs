//! Integration tests against the real Redis, PostgreSQL and RabbitMQ, each test
//! isolated in its own database and key prefix (see `helpers`).

mod bad_input;
mod checkout;
mod expiry;
mod faults;
mod helpers;
mod holds;
mod inventory;
mod lifecycle;
mod login;
mod otlp;
mod processes;
mod read_api;
mod schema;
mod traces;
mod writer;
