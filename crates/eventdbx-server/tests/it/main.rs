//! Integration tests of the server.
mod auth;
mod config;
mod control;
mod support;
mod tenants;
