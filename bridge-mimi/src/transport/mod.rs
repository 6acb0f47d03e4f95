//! The HTTPS transport (filled in next).
