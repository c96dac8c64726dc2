//! Integration tests of the server.
mod config;
