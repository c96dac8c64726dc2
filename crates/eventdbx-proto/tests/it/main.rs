//! Integration tests of the protocol crate (one binary, several modules).

mod frame;
mod golden;
mod hostile_input;
mod noise_interop;
mod noise_v2;
mod plugin;
mod roundtrip;
mod schema_drift;
