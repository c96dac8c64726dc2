//! Integration tests of the server.
mod auth;
mod config;
mod tenants;
