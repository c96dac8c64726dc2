//! Compatibility tests only; see tests/.
