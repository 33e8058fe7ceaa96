//! STUB
#![allow(missing_docs, unused)]
use std::path::{Path, PathBuf};
#[derive(Debug, thiserror::Error)]
#[error("x")]
pub struct LogError;
#[derive(Clone)]
pub struct LogPipe;
impl LogPipe {
    pub fn spawn(log: PathBuf, out: &Path, err: &Path) -> Result<LogPipe, LogError> { todo!() }
    pub async fn reopen(&self) -> Result<(), LogError> { todo!() }
    pub async fn finish(self) {}
}
