//! What the fuzz targets share: the record format of the scripted targets and the fixed
//! identities of the Noise targets, so that `examples/seed_corpus.rs` writes seeds in exactly the
//! shape the targets read.
//!
//! # Layout
//! - [`records`]: `tag (u8) || length (u16, big-endian) || bytes`, repeated; the input of the
//!   targets that play a whole exchange (the Noise handshakes and sessions).
//! - [`identity`]: the token, keys and prologue both sides of a Noise target use.
//! - [`split_text`]: the input of the two-part text targets (a document, a newline, the rest).

pub mod identity;
pub mod records;

/// Splits a text input at its first newline: `(first line, rest)`; no newline gives `(all, "")`.
pub fn split_text(text: &str) -> (&str, &str) {
    text.split_once('\n').unwrap_or((text, ""))
}
