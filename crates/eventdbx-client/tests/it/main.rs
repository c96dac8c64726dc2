//! Integration tests of the client against the real server, in process, over real TCP.

mod blocking;
mod busy_poll;
mod concurrency;
mod connect;
mod downgrade;
mod faults;
mod harness;
mod operations;
mod streams;
mod subscriptions;
