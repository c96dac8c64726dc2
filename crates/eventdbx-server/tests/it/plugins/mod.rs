//! Plugins and publish targets against a real server and
//! real receivers on `127.0.0.1:0`.

mod http;
mod process_and_tcp;
pub(crate) mod receiver;
