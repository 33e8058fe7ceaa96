//! Pod sandboxes: the pause container, its network namespace and its files.

pub mod config;
pub mod files;
pub mod record;
mod remove;
pub mod run;
mod stop;
