//! linechat
