//! The record format of the scripted targets: `tag (u8) || length (u16, big-endian) || bytes`.
//!
//! A plain format rather than `arbitrary` so that seeds can be written from real messages and
//! a crash file can be read by eye. A truncated last record keeps the bytes that are there.

/// One record: what to do (`tag`) and with which bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub tag: u8,
    pub bytes: &'a [u8],
}

impl Record<'_> {
    /// An even tag asks the target to seal `bytes` as a well-formed message of the attacker's
    /// session; an odd one hands `bytes` to the responder as they are.
    pub fn is_raw(&self) -> bool {
        self.tag & 1 == 1
    }
}

/// Reads records off a fuzz input.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    rest: &'a [u8],
}

impl<'a> Records<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Records { rest: input }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let (&tag, rest) = self.rest.split_first()?;
        let (len, rest) = match rest.split_first_chunk::<2>() {
            Some((len, rest)) => (usize::from(u16::from_be_bytes(*len)), rest),
            None => (rest.len(), rest),
        };
        let (bytes, rest) = rest.split_at(len.min(rest.len()));
        self.rest = rest;
        Some(Record { tag, bytes })
    }
}

/// Writes records in the format [`Records`] reads (the seed generator's side).
///
/// Records longer than `u16::MAX` are cut there: no seed needs more.
pub fn encode(records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (tag, bytes) in records {
        let bytes = &bytes[..bytes.len().min(usize::from(u16::MAX))];
        out.push(*tag);
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The tag of a record to seal.
pub const SEALED: u8 = 0;
/// The tag of a record passed on raw.
pub const RAW: u8 = 1;
