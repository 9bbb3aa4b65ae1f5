//! End-to-end tests: one binary, driving whole stacks on the real Postgres, Docker engine
//! (BuildKit and runtime), registry and S3 server.

mod aliases;
mod auth;
mod bad_input;
mod console;
mod crash;
mod deletion;
mod deploy_flow;
mod ecr;
mod env;
mod event_stream;
mod events;
mod faults;
mod fencing;
mod hooks;
mod idempotency;
mod integrity;
mod isolation;
mod keys;
mod limits;
mod log_stream;
mod metrics;
mod openapi;
mod ops;
mod postgres_restart;
mod proxy;
mod redeploy;
mod rollback;
mod scheduler;
mod signing;
mod stack;
mod store;
mod swarm;
mod templates;
mod webhooks;
mod workers;
