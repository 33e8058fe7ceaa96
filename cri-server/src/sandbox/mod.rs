//! Pod sandboxes: the pause container, its network namespace and its files.

pub mod config;
pub mod files;
