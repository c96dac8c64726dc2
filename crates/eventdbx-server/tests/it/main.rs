//! Integration tests of the server.
mod architecture;
mod auth;
mod busy_poll;
mod config;
mod control;
mod correctness;
mod error_codes;
mod flows;
mod plugins;
mod process_plugin;
mod references;
mod restart;
mod runtime_flavor;
mod standalone;
mod support;
mod tenants;
mod tenants_control;
