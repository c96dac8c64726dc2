//! Integration tests of the server.
mod auth;
mod config;
mod control;
mod correctness;
mod flows;
mod support;
mod tenants;
mod tenants_control;
