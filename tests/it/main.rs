//! Integration tests against the real Redis, PostgreSQL and RabbitMQ, each test
//! isolated in its own database and key prefix (see `helpers`); `compose` needs none
//! of them.

mod bad_input;
mod balancer;
mod broker;
mod checkout;
mod compose;
mod deployment;
mod durable;
mod expiry;
mod faults;
mod faults_broker;
mod faults_broker_cut;
mod faults_broker_nack;
mod faults_pg;
mod faults_redis;
mod faults_redis_aof;
mod fuzz;
mod helpers;
mod holds;
mod hostile;
mod inventory;
mod lifecycle;
mod load;
mod login;
mod openapi;
mod otlp;
mod processes;
mod rabbit_cluster;
mod read_api;
mod redis_cluster;
mod replication;
mod schema;
mod schemathesis;
mod traces;
mod waiting_room;
mod waiting_room_operator;
mod waiting_room_page;
mod waiting_room_processes;
mod writer;
