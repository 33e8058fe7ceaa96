//! The metadata store: one redb file holding crius's records as JSON values.
//!
//! Why redb: an embedded, crash-safe (copy-on-write, fsync on commit) key-value store in pure
//! Rust, so a `kill -9` of the daemon leaves either the old or the new state of a transaction
//! and nothing in between. Records are JSON so that their shape can grow without migrations.
//! redb takes an exclusive file lock: one process owns a root at a time.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A table of JSON records keyed by string.
#[derive(Clone, Copy)]
pub struct Table(
    TableDefinition<'static, &'static str, &'static [u8]>,
    &'static str,
);

impl Table {
    const fn new(name: &'static str) -> Table {
        Table(TableDefinition::new(name), name)
    }
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Table({})", self.1)
    }
}

/// Images by id (`sha256:` of the config).
pub const IMAGES: Table = Table::new("images");
/// Unpacked layer snapshots by chain ID.
pub const SNAPSHOTS: Table = Table::new("snapshots");
/// Counters and other small values.
pub const META: Table = Table::new("meta");
/// Snapshot chains in use by sandboxes and containers: owner id → top chain ID. Written
/// in the same transaction as the owner's record, so a crash never loses a lease.
pub const LEASES: Table = Table::new("leases");
/// Pod sandboxes by id.
pub const SANDBOXES: Table = Table::new("sandboxes");
/// Containers by id.
pub const CONTAINERS: Table = Table::new("containers");
/// Reserved names (`<name>_<namespace>_<uid>_<attempt>`) → the id that holds them.
pub const NAMES: Table = Table::new("names");

const ALL_TABLES: [Table; 7] = [
    IMAGES, SNAPSHOTS, META, LEASES, SANDBOXES, CONTAINERS, NAMES,
];

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually a running crius daemon) holds the store.
    #[error("store {path} is in use by another process (is the crius daemon running?)")]
    Locked {
        /// the redb file.
        path: PathBuf,
    },
    /// redb failed.
    #[error("store {context}: {message}")]
    Db {
        /// what the store was doing.
        context: &'static str,
        /// redb's message.
        message: String,
    },
    /// A record could not be encoded or decoded.
    #[error("store record {table}/{key}: {source}")]
    Codec {
        /// the table.
        table: &'static str,
        /// the key.
        key: String,
        /// serde_json's error.
        source: serde_json::Error,
    },
}

fn db_err(context: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Db {
        context,
        message: e.to_string(),
    }
}

/// The store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Arc<redb::Database>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Opens (or creates) the store file and makes sure every table exists.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Db {
                context: "create directory",
                message: format!("{}: {e}", dir.display()),
            })?;
        }
        let db = match redb::Database::create(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(StoreError::Locked {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(db_err("open")(e.into())),
        };
        let txn = db.begin_write().map_err(|e| db_err("begin")(e.into()))?;
        for t in ALL_TABLES {
            txn.open_table(t.0)
                .map_err(|e| db_err("create table")(e.into()))?;
        }
        txn.commit().map_err(|e| db_err("commit")(e.into()))?;
        Ok(Store { db: Arc::new(db) })
    }

    /// Reads one record.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| db_err("begin read")(e.into()))?;
        let t = txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        read_one(&t, table, key)
    }

    /// Reads every record of a table, in key order.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| db_err("begin read")(e.into()))?;
        let t = txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        read_all(&t, table)
    }

    /// Runs `f` in one write transaction: everything it does commits together or not at all.
    pub fn update<R>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let txn = self
            .db
            .begin_write()
            .map_err(|e| db_err("begin write")(e.into()))?;
        let mut w = Txn { txn: &txn };
        let r = f(&mut w)?;
        txn.commit().map_err(|e| db_err("commit")(e.into()))?;
        Ok(r)
    }
}

/// A write transaction.
pub struct Txn<'a> {
    txn: &'a redb::WriteTransaction,
}

impl Txn<'_> {
    /// Reads one record inside the transaction.
    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let t = self
            .txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        read_one(&t, table, key)
    }

    /// Writes one record.
    pub fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Codec {
            table: table.1,
            key: key.to_string(),
            source,
        })?;
        let mut t = self
            .txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        t.insert(key, bytes.as_slice())
            .map_err(|e| db_err("insert")(e.into()))?;
        Ok(())
    }

    /// Deletes one record; true if it was there.
    pub fn delete(&mut self, table: Table, key: &str) -> Result<bool, StoreError> {
        let mut t = self
            .txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        let old = t.remove(key).map_err(|e| db_err("remove")(e.into()))?;
        Ok(old.is_some())
    }

    /// Reads every record of a table inside the transaction.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StoreError> {
        let t = self
            .txn
            .open_table(table.0)
            .map_err(|e| db_err("open table")(e.into()))?;
        read_all(&t, table)
    }

    /// Increments and returns a named counter (starting at 1).
    pub fn next_id(&mut self, name: &str) -> Result<u64, StoreError> {
        let n = self.get::<u64>(META, name)?.unwrap_or(0) + 1;
        self.put(META, name, &n)?;
        Ok(n)
    }
}

/// One record of an open table (read or write transaction alike).
fn read_one<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: Table,
    key: &str,
) -> Result<Option<T>, StoreError> {
    let Some(v) = t.get(key).map_err(|e| db_err("get")(e.into()))? else {
        return Ok(None);
    };
    decode(table, key, v.value()).map(Some)
}

/// Every record of an open table, in key order.
fn read_all<T: DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    table: Table,
) -> Result<Vec<(String, T)>, StoreError> {
    let mut out = Vec::new();
    for row in t.iter().map_err(|e| db_err("iterate")(e.into()))? {
        let (k, v) = row.map_err(|e| db_err("iterate")(e.into()))?;
        let key = k.value().to_string();
        let val = decode(table, &key, v.value())?;
        out.push((key, val));
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(table: Table, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Codec {
        table: table.1,
        key: key.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_transactions_are_atomic() -> Result<(), StoreError> {
        let dir = tempfile::tempdir().map_err(|e| StoreError::Db {
            context: "tempdir",
            message: e.to_string(),
        })?;
        let path = dir.path().join("crius.redb");
        {
            let s = Store::open(&path)?;
            s.update(|t| t.put(IMAGES, "a", &vec![1u32, 2]))?;
            // A failing closure commits nothing.
            let failed: Result<(), StoreError> = s.update(|t| {
                t.put(IMAGES, "b", &1u32)?;
                Err(StoreError::Db {
                    context: "test",
                    message: "abort".into(),
                })
            });
            assert!(failed.is_err());
            assert!(matches!(Store::open(&path), Err(StoreError::Locked { .. })));
        }
        let s = Store::open(&path)?;
        assert_eq!(s.get::<Vec<u32>>(IMAGES, "a")?, Some(vec![1, 2]));
        assert_eq!(s.get::<u32>(IMAGES, "b")?, None);
        assert_eq!(s.update(|t| t.next_id("snap"))?, 1);
        assert_eq!(s.update(|t| t.next_id("snap"))?, 2);
        assert_eq!(s.list::<Vec<u32>>(IMAGES)?.len(), 1);
        Ok(())
    }
}
