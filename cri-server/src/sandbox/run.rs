//! RunPodSandbox: reserve the name, make the sandbox's files, netns and rootfs, and start
//! the pause container through the handler's shim while CNI attaches the netns.
//!
//! The record is written as `Creating` (with the name and the image lease) before anything
//! is made on the host; every later step is undone by [`Pods::teardown_sandbox`] on
//! failure, and by recovery after a crash.

use std::sync::Arc;

use crius_handlers::{shim, Resolved};
use runtime_v2_api::CreateTask;

use super::config::PodConfig;
use super::files::{DnsConfig, FilesError, SandboxFiles, SandboxFilesSpec, DEFAULT_SHM_SIZE};
use super::record::{SandboxRecord, SandboxState};
use crate::image::rootfs::{self, Overlay};
use crate::network::netns::NetNs;
use crate::pods::{lock, new_id, now_ns, PodError, Pods};
use crate::spec;
use crate::store::{LEASES, NAMES, SANDBOXES};

/// What [`SandboxFiles::create`] makes for `pod`.
fn files_spec<'a>(pod: &'a PodConfig, dns: Option<&'a DnsConfig>) -> SandboxFilesSpec<'a> {
    SandboxFilesSpec {
        hostname: &pod.hostname,
        dns,
        host_network: pod.host_network(),
        host_ipc: pod.host_ipc(),
        shm_size: DEFAULT_SHM_SIZE,
    }
}

/// A bad hostname or DNS value is the caller's error; anything else is ours.
fn files_error(e: FilesError) -> PodError {
    match e {
        FilesError::InvalidArgument { .. } => PodError::InvalidArgument(e.to_string()),
        e => PodError::internal("sandbox files", e),
    }
}

/// The name a sandbox reserves: `<name>_<namespace>_<uid>_<attempt>`, as containerd does.
pub fn reserved_name(cfg: &PodConfig) -> String {
    let m = &cfg.metadata;
    format!("{}_{}_{}_{}", m.name, m.namespace, m.uid, m.attempt)
}

impl Pods {
    /// Runs a pod sandbox and returns its id.
    pub async fn run_sandbox(
        self: &Arc<Self>,
        config: PodConfig,
        handler_name: &str,
    ) -> Result<String, PodError> {
        tracing::debug!(name = %config.metadata.name, "running a sandbox");
        let handler = self.handlers.lookup(handler_name)?;
        files_spec(&config, config.dns_files().as_ref())
            .check()
            .map_err(files_error)?;
        if !config.host_network() {
            // Checked before anything is made: a pod cannot start without its network,
            // and a bad bandwidth annotation is the caller's error.
            self.cfg.cni.network().map_err(|why| {
                PodError::FailedPrecondition(format!("pod network is not ready: {why}"))
            })?;
            self.cfg.cni.validate(&config)?;
        }
        let image = self
            .images
            .resolve(&self.cfg.sandbox_image)?
            .ok_or_else(|| {
                PodError::NotFound(format!(
                    "sandbox image {:?} is not present",
                    self.cfg.sandbox_image
                ))
            })?;
        let chain = image.top_chain_id().cloned().ok_or_else(|| {
            PodError::Internal(format!("sandbox image {} has no layers", image.id))
        })?;
        let id = new_id()?;
        let name = reserved_name(&config);
        let _guard = self.locks.lock(&id).await;
        let netns = !config.host_network();
        let rec = SandboxRecord {
            id: id.clone(),
            name: name.clone(),
            config,
            handler: handler.name.clone(),
            state: SandboxState::Creating,
            created_at: now_ns(),
            // Known before it exists, so a rollback or a recovery always finds it.
            netns: netns.then(|| NetNs::pin_path(&self.cfg.dirs.netns, &id)),
            ips: Vec::new(),
            pid: 0,
            bootstrap: None,
            image: image.id.to_string(),
            spec: None,
        };
        // Not synced: the Ready record at the end is, and takes this one to disk with it.
        // A crash before it loses the reservation; recovery then stops the shim, removes
        // the files and the netns pin and DELs the CNI attachment that no record owns.
        let holder = self.store.update_lazy(|t| {
            if let Some(holder) = t.get::<String>(NAMES, &name)? {
                return Ok(Some(holder));
            }
            t.put(NAMES, &name, &id)?;
            t.put(SANDBOXES, &id, &rec)?;
            t.put(LEASES, &id, &chain)?;
            Ok(None)
        })?;
        if let Some(holder) = holder {
            return Err(PodError::AlreadyExists(format!(
                "pod sandbox name {name:?} is reserved by {holder}"
            )));
        }
        lock(&self.records)
            .sandboxes
            .insert(id.clone(), rec.clone());
        match self.make_sandbox(rec, &handler, &chain).await {
            Ok(()) => {
                tracing::debug!(sandbox = %id, "ready");
                Ok(id)
            }
            Err(e) => {
                if let Err(te) = self.teardown_sandbox_locked(&id).await {
                    tracing::warn!(sandbox = %id, error = %te, "rolling back a failed sandbox");
                }
                Err(e)
            }
        }
    }

    /// Makes the sandbox. The spec is built first from paths known in advance, so that the
    /// shim's start-up (which needs only the bundle's `config.json`), the host side and the
    /// network need not wait for one another.
    async fn make_sandbox(
        &self,
        mut rec: SandboxRecord,
        handler: &Resolved,
        chain: &crate::image::digest::Digest,
    ) -> Result<(), PodError> {
        let id = rec.id.clone();
        tracing::debug!(sandbox = %id, "making");
        let dirs = &self.cfg.dirs;
        let files_dir = dirs.sandboxes.join(&id);
        let bundle = dirs.bundle(&id);
        let rec_image = self
            .images
            .resolve(&rec.image)?
            .ok_or_else(|| PodError::NotFound(format!("sandbox image {} vanished", rec.image)))?;
        let (image_config, _) = self.images.config(&rec_image).await?;
        let paths =
            crate::sandbox::spec_paths(&SandboxFiles::at(&files_dir), rec.config.host_ipc());
        let cgroups_path = spec::cgroups_path(
            rec.config.cgroup_parent(),
            &id,
            handler.handler.options.systemd_cgroup.unwrap_or(false),
        );
        let oci = tokio::task::block_in_place(|| {
            spec::sandbox_spec(&spec::SandboxSpecInput {
                id: &id,
                pod: &rec.config,
                image: &image_config,
                image_name: &self.cfg.sandbox_image,
                netns: rec.netns.as_deref(),
                paths: &paths,
                cgroups_path,
                host: &self.cfg.host,
                runtime_handler: &handler.name,
            })
        })
        .map_err(PodError::from)?;
        tokio::fs::create_dir_all(&bundle)
            .await
            .map_err(|e| PodError::internal(format!("creating {}", bundle.display()), e))?;
        spec::write_spec(&oci, &bundle).map_err(PodError::from)?;
        rec.spec = spec::StoredSpec::new(&oci).ok();
        tracing::debug!(sandbox = %id, "spec written");

        // Three arms at once: the network (CNI ADD, as soon as the netns exists), the host
        // side (files, rootfs), and the shim's start-up; the pause container is created
        // once the last two are done, while ADD may still run (containerd and CRI-O run
        // the network and the pause one after the other).
        let pod_net = match &rec.netns {
            Some(ns) => Some(self.cfg.cni.pod_network(&id, ns, &rec.config)?),
            None => None,
        };
        let (netns_made, netns_ready) = tokio::sync::oneshot::channel::<()>();
        let attach = async {
            let Some(pod) = pod_net else {
                return Ok(None);
            };
            if netns_ready.await.is_err() {
                return Ok(None); // the host side failed before the netns: nothing to attach
            }
            let att = self.cfg.cni.setup(&pod).await?;
            tracing::debug!(sandbox = %id, ips = ?att.ips, "network attached");
            Ok::<_, PodError>(Some(att))
        };
        let pause = async {
            let host_side = async {
                if rec.netns.is_some() {
                    NetNs::create(&dirs.netns, &id)
                        .await
                        .map_err(|e| PodError::internal("network namespace", e))?;
                    tracing::debug!(sandbox = %id, "netns made");
                }
                let _ = netns_made.send(());
                let dns = rec.config.dns_files();
                SandboxFiles::create(&files_dir, &files_spec(&rec.config, dns.as_ref()))
                    .await
                    .map_err(files_error)?;
                tracing::debug!(sandbox = %id, "files made");
                self.mount_rootfs(&id, chain).await?;
                tracing::debug!(sandbox = %id, "rootfs mounted");
                Ok::<_, PodError>(())
            };
            // Both run to the end even when one fails, so that everything they made is
            // known to the rollback (the netns pin path is in the record from the start).
            let (made, launched) = tokio::join!(
                host_side,
                shim::launch(handler, &self.cfg.env, &id, &bundle)
            );
            tracing::debug!(sandbox = %id, "shim up");
            if let Ok(l) = &launched {
                rec.bootstrap = Some(l.bootstrap.to_json());
                lock(&self.shims).insert(id.clone(), l.client.clone());
            }
            self.save_sandbox_lazy(&rec)?;
            made?;
            let client = launched?.client;
            client
                .create(CreateTask {
                    id: id.clone(),
                    bundle: bundle.clone(),
                    rootfs: Vec::new(),
                    terminal: false,
                    stdin: String::new(),
                    stdout: String::new(),
                    stderr: String::new(),
                    options: shim::runc_options(handler),
                    start_at_create: false,
                })
                .await?;
            tracing::debug!(sandbox = %id, "pause created");
            let pid = client.start(&id, "").await?;
            tracing::debug!(sandbox = %id, "pause started");
            Ok::<_, PodError>(pid)
        };
        let (started, attached) = tokio::join!(pause, attach);
        rec.pid = started?;
        if let Some(att) = attached? {
            rec.ips = att.ips;
        }
        rec.state = SandboxState::Ready;
        self.save_sandbox(&rec)?;
        Ok(())
    }

    /// Mounts the overlay rootfs of task `id` (sandbox or container) over the image chain
    /// `chain`, with its writable layer under `rw/<id>`.
    pub(crate) async fn mount_rootfs(
        &self,
        id: &str,
        chain: &crate::image::digest::Digest,
    ) -> Result<std::path::PathBuf, PodError> {
        let dirs = &self.cfg.dirs;
        let target = dirs.bundle(id).join("rootfs");
        let upper = dirs.rw.join(id).join("fs");
        let work = dirs.rw.join(id).join("work");
        for d in [&target, &upper, &work] {
            tokio::fs::create_dir_all(d)
                .await
                .map_err(|e| PodError::internal(format!("creating {}", d.display()), e))?;
        }
        let lowers = self.images.snapshots().lowers(chain)?;
        rootfs::mount(
            &Overlay {
                lowers: &lowers,
                upper: &upper,
                work: &work,
            },
            &target,
        )
        .await
        .map_err(|e| PodError::internal("rootfs", e))?;
        Ok(target)
    }

    /// Unmounts and removes task `id`'s bundle and writable layer; absent parts are fine.
    pub(crate) async fn remove_task_dirs(&self, id: &str) -> Result<(), PodError> {
        let dirs = &self.cfg.dirs;
        let bundle = dirs.bundle(id);
        rootfs::unmount(&bundle.join("rootfs"))
            .await
            .map_err(|e| PodError::internal("rootfs", e))?;
        for d in [bundle, dirs.rw.join(id)] {
            match tokio::fs::remove_dir_all(&d).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PodError::internal(format!("removing {}", d.display()), e)),
            }
        }
        Ok(())
    }
}
