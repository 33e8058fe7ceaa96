//! The pods of this node: every sandbox and container, their shims, and the records that
//! let a restarted daemon find them again.
//!
//! Records live in the store (the truth after a crash) and in memory (what reads use, so
//! `ListContainers` never decodes the store). Every change is written to the store first,
//! then to memory. Lifecycle verbs live beside their concept: `sandbox::{run, stop,
//! remove}`, `container::{create, start, stop, remove, exec}`; recovery in [`recover`].

mod error;
pub mod events;
pub mod recover;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crius_handlers::{Registry, ShimEnv};
use runtime_v2_api::TaskClient;
use tokio::sync::broadcast;

pub use error::PodError;
pub use events::{ContainerEvent, ContainerEventKind};

use crate::container::log::LogPipe;
use crate::container::record::ContainerRecord;
use crate::image::pull::KeyedLocks;
use crate::image::ImageService;
use crate::sandbox::record::{SandboxRecord, SandboxState};
use crate::spec::HostFacts;
use crate::store::{Store, CONTAINERS, SANDBOXES};

/// Where a daemon keeps pod state on disk.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// `<state>/tasks/<id>`: bundles (config.json, rootfs mount, shim files).
    pub tasks: PathBuf,
    /// `<state>/netns/<sandbox id>`: pinned network namespaces.
    pub netns: PathBuf,
    /// `<root>/sandboxes/<id>`: hostname, hosts, resolv.conf, shm.
    pub sandboxes: PathBuf,
    /// `<root>/rw/<id>/{fs,work}`: writable layers of sandboxes and containers.
    pub rw: PathBuf,
}

impl Dirs {
    /// The layout under a daemon's `root` and `state`.
    pub fn new(root: &std::path::Path, state: &std::path::Path) -> Dirs {
        Dirs {
            tasks: state.join("tasks"),
            netns: state.join("netns"),
            sandboxes: root.join("sandboxes"),
            rw: root.join("rw"),
        }
    }

    /// A task's bundle.
    pub fn bundle(&self, id: &str) -> PathBuf {
        self.tasks.join(id)
    }
}

/// What [`Pods::open`] needs.
#[derive(Debug, Clone)]
pub struct PodsConfig {
    pub dirs: Dirs,
    pub env: ShimEnv,
    pub host: HostFacts,
    /// The pause image reference (`crius.local/pause:builtin` by default).
    pub sandbox_image: String,
    /// The pod network.
    pub cni: Arc<crate::network::cni::Cni>,
}

#[derive(Default)]
pub(crate) struct Records {
    pub sandboxes: BTreeMap<String, SandboxRecord>,
    /// Changed only through [`Records::put_container`] and [`Records::drop_container`],
    /// which count the changes.
    containers: BTreeMap<String, ContainerRecord>,
    /// Bumped on every change to `containers`: lets readers reuse what they built from an
    /// unchanged set (ListContainers' encoded reply).
    containers_generation: u64,
}

impl Records {
    pub fn containers(&self) -> &BTreeMap<String, ContainerRecord> {
        &self.containers
    }

    pub fn put_container(&mut self, rec: ContainerRecord) {
        self.containers_generation += 1;
        self.containers.insert(rec.id.clone(), rec);
    }

    pub fn drop_container(&mut self, id: &str) {
        self.containers_generation += 1;
        self.containers.remove(id);
    }
}

/// Every sandbox and container of the node.
pub struct Pods {
    pub(crate) store: Store,
    pub(crate) images: Arc<ImageService>,
    pub(crate) handlers: Registry,
    pub(crate) cfg: PodsConfig,
    pub(crate) records: Mutex<Records>,
    /// Shim clients by sandbox id (one shim per pod).
    pub(crate) shims: Mutex<HashMap<String, TaskClient>>,
    /// Serialises lifecycle verbs on one id.
    pub(crate) locks: KeyedLocks,
    /// CRI log drains of containers whose shim does not write logs itself.
    pub(crate) log_pipes: Mutex<HashMap<String, Arc<LogPipe>>>,
    /// Write ends of the stdin fifos of containers created with `stdin`, which attach
    /// sessions write to (`None` once closed by a `stdin_once` detach).
    pub(crate) stdin_pipes: Mutex<HashMap<String, crate::container::attach::StdinPipe>>,
    pub(crate) events: broadcast::Sender<ContainerEvent>,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods")
            .field("dirs", &self.cfg.dirs)
            .finish()
    }
}

/// Locks a std mutex, ignoring poisoning (a panic is a bug and aborts in release).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pods {
    /// Loads the records (without touching shims: see [`Pods::recover`]).
    pub fn open(
        store: Store,
        images: Arc<ImageService>,
        handlers: Registry,
        cfg: PodsConfig,
    ) -> Result<Arc<Pods>, PodError> {
        let mut records = Records::default();
        for (id, rec) in store.list::<SandboxRecord>(SANDBOXES)? {
            records.sandboxes.insert(id, rec);
        }
        for (_, rec) in store.list::<ContainerRecord>(CONTAINERS)? {
            records.put_container(rec);
        }
        let (events, _) = broadcast::channel(1024);
        Ok(Arc::new(Pods {
            store,
            images,
            handlers,
            cfg,
            records: Mutex::new(records),
            shims: Mutex::new(HashMap::new()),
            locks: KeyedLocks::default(),
            log_pipes: Mutex::new(HashMap::new()),
            stdin_pipes: Mutex::new(HashMap::new()),
            events,
        }))
    }

    /// Subscribes to container events (`GetContainerEvents`).
    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.events.subscribe()
    }

    /// The IPs `PodSandboxStatus` reports: CNI's for a pod network, the host's for a
    /// `host_network` pod that is ready (it shares them), none once stopped.
    pub fn sandbox_ips(&self, rec: &SandboxRecord) -> Vec<std::net::IpAddr> {
        if rec.config.host_network() {
            if rec.state == SandboxState::Ready {
                return crate::network::host_ip::host_ip().into_iter().collect();
            }
            return Vec::new();
        }
        rec.ips.clone()
    }

    /// Sets the node's pod CIDRs (`UpdateRuntimeConfig`).
    pub fn set_pod_cidrs(&self, cidrs: Vec<String>) {
        self.cfg.cni.set_pod_cidrs(cidrs);
    }

    /// Where writable layers live (the `mountpoint` of writable-layer usage).
    pub fn rw_root(&self) -> String {
        self.cfg.dirs.rw.display().to_string()
    }

    /// The handler registry.
    pub fn handlers(&self) -> &Registry {
        &self.handlers
    }

    pub(crate) fn emit(&self, container_id: &str, sandbox_id: &str, kind: ContainerEventKind) {
        let _ = self.events.send(ContainerEvent {
            container_id: container_id.to_string(),
            sandbox_id: sandbox_id.to_string(),
            kind,
            at: now_ns(),
        });
    }

    /// A sandbox by id or unique id prefix.
    pub fn sandbox(&self, id: &str) -> Result<Option<SandboxRecord>, PodError> {
        let r = lock(&self.records);
        find(&r.sandboxes, id, "pod sandbox", "pod_sandbox_id")
    }

    /// A container by id or unique id prefix.
    pub fn container(&self, id: &str) -> Result<Option<ContainerRecord>, PodError> {
        let r = lock(&self.records);
        find(r.containers(), id, "container", "container_id")
    }

    /// Every sandbox.
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        lock(&self.records).sandboxes.values().cloned().collect()
    }

    /// Every container, filtered by `keep` without cloning the ones left out.
    pub fn containers_where(
        &self,
        keep: impl Fn(&ContainerRecord) -> bool,
    ) -> Vec<ContainerRecord> {
        lock(&self.records)
            .containers()
            .values()
            .filter(|c| keep(c))
            .cloned()
            .collect()
    }

    /// Maps the containers `keep` selects, under the lock and without cloning the records
    /// (ListContainers with a thousand containers must stay cheap).
    pub fn map_containers<T>(
        &self,
        keep: impl Fn(&ContainerRecord) -> bool,
        map: impl FnMut(&ContainerRecord) -> T,
    ) -> Vec<T> {
        lock(&self.records)
            .containers()
            .values()
            .filter(|c| keep(c))
            .map(map)
            .collect()
    }

    /// Runs `f` over every container, under the lock, with the set's generation: a number
    /// that changes whenever any container is added, changed or removed.
    pub fn read_containers<T>(
        &self,
        f: impl FnOnce(u64, std::collections::btree_map::Values<'_, String, ContainerRecord>) -> T,
    ) -> T {
        let r = lock(&self.records);
        f(r.containers_generation, r.containers().values())
    }

    /// Containers of one sandbox.
    pub(crate) fn containers_of(&self, sandbox_id: &str) -> Vec<ContainerRecord> {
        self.containers_where(|c| c.sandbox_id == sandbox_id)
    }

    /// Writes a sandbox record to the store, then to memory.
    pub(crate) fn save_sandbox(&self, rec: &SandboxRecord) -> Result<(), PodError> {
        self.store.update(|t| t.put(SANDBOXES, &rec.id, rec))?;
        lock(&self.records)
            .sandboxes
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// [`Pods::save_sandbox`] without the fsync, for steps recovery can rebuild from disk
    /// (the netns pin, the shim's `address` file).
    pub(crate) fn save_sandbox_lazy(&self, rec: &SandboxRecord) -> Result<(), PodError> {
        self.store.update_lazy(|t| t.put(SANDBOXES, &rec.id, rec))?;
        lock(&self.records)
            .sandboxes
            .insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    /// Writes a container record to the store, then to memory.
    pub(crate) fn save_container(&self, rec: &ContainerRecord) -> Result<(), PodError> {
        self.store.update(|t| t.put(CONTAINERS, &rec.id, rec))?;
        lock(&self.records).put_container(rec.clone());
        Ok(())
    }

    /// Changes a container record in place (store, then memory); `None` if it is gone.
    pub(crate) fn update_container(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>, PodError> {
        self.change_container(id, false, f)
    }

    /// [`Pods::update_container`] without the fsync, for a change recovery finds again on
    /// its own (a started container: its task in the shim).
    pub(crate) fn update_container_lazy(
        &self,
        id: &str,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>, PodError> {
        self.change_container(id, true, f)
    }

    fn change_container(
        &self,
        id: &str,
        lazy: bool,
        f: impl FnOnce(&mut ContainerRecord),
    ) -> Result<Option<ContainerRecord>, PodError> {
        let change = |t: &mut crate::store::Txn<'_>| {
            let Some(mut rec) = t.get::<ContainerRecord>(CONTAINERS, id)? else {
                return Ok(None);
            };
            f(&mut rec);
            t.put(CONTAINERS, id, &rec)?;
            Ok(Some(rec))
        };
        let updated = if lazy {
            self.store.update_lazy(change)?
        } else {
            self.store.update(change)?
        };
        if let Some(rec) = &updated {
            lock(&self.records).put_container(rec.clone());
        }
        Ok(updated)
    }

    /// Changes a sandbox record in place (store, then memory); `None` if it is gone.
    pub(crate) fn update_sandbox(
        &self,
        id: &str,
        f: impl FnOnce(&mut SandboxRecord),
    ) -> Result<Option<SandboxRecord>, PodError> {
        let updated = self.store.update(|t| {
            let Some(mut rec) = t.get::<SandboxRecord>(SANDBOXES, id)? else {
                return Ok(None);
            };
            f(&mut rec);
            t.put(SANDBOXES, id, &rec)?;
            Ok(Some(rec))
        })?;
        if let Some(rec) = &updated {
            lock(&self.records)
                .sandboxes
                .insert(rec.id.clone(), rec.clone());
        }
        Ok(updated)
    }

    /// The shim client of a sandbox, when connected.
    pub(crate) fn shim(&self, sandbox_id: &str) -> Option<TaskClient> {
        lock(&self.shims).get(sandbox_id).cloned()
    }
}

/// Looks `id` up exactly, then as a unique prefix.
fn find<T: Clone>(
    map: &BTreeMap<String, T>,
    id: &str,
    what: &str,
    field: &str,
) -> Result<Option<T>, PodError> {
    if id.is_empty() {
        return Err(PodError::InvalidArgument(format!("{field} is empty")));
    }
    if let Some(v) = map.get(id) {
        return Ok(Some(v.clone()));
    }
    let mut hits = map
        .range(id.to_string()..)
        .take_while(|(k, _)| k.starts_with(id));
    let Some((_, first)) = hits.next() else {
        return Ok(None);
    };
    if hits.next().is_some() {
        return Err(PodError::InvalidArgument(format!(
            "{field} {id:?} is an ambiguous prefix: it matches more than one {what}"
        )));
    }
    Ok(Some(first.clone()))
}

/// A new 64-hex-character id.
pub(crate) fn new_id() -> Result<String, PodError> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| PodError::internal("reading /dev/urandom", e))?;
    Ok(hex::encode(buf))
}

/// Now, in Unix nanoseconds.
pub(crate) fn now_ns() -> i64 {
    to_ns(SystemTime::now())
}

/// A time in Unix nanoseconds.
pub(crate) fn to_ns(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lookup_is_exact_then_unique() {
        let mut m = BTreeMap::new();
        m.insert("abc1".to_string(), 1);
        m.insert("abc2".to_string(), 2);
        m.insert("b".to_string(), 3);
        assert_eq!(find(&m, "abc1", "x", "x_id").ok().flatten(), Some(1));
        assert_eq!(find(&m, "b", "x", "x_id").ok().flatten(), Some(3));
        let e = find(&m, "abc", "x", "x_id")
            .map(|_| ())
            .expect_err("ambiguous");
        assert!(e.to_string().contains("ambiguous"), "{e}");
        assert_eq!(find(&m, "c", "x", "x_id").ok().flatten(), None);
        let e = find(&m, "", "x", "x_id").map(|_| ()).expect_err("empty");
        assert!(e.to_string().contains("x_id"), "{e}");
    }
}
