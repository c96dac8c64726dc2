//! Plugins and publish targets (`04-acceptance.md` G, items 85–92) against a real server and
//! real receivers on `127.0.0.1:0`.

mod http;
mod process_and_tcp;
pub(crate) mod receiver;
