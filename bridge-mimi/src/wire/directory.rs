//! The endpoint directory (filled in next).
