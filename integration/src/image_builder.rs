//! Images built in memory and pushed to a real registry over the v2 HTTP API, so pull tests
//! control every byte: layer entries (including the malicious ones an honest tar writer
//! refuses), compression, media types, digests, multi-platform indexes, and blobs the
//! registry serves under a digest they do not match.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::bundle::BUSYBOX;
pub use crate::oci_archive::Blob;
use crate::registry::Registry;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What [`Attack`] layers write where they must not.
pub const ATTACK_PAYLOAD: &[u8] = b"crius: escaped the snapshot\n";

/// mtime of every entry: fixed, so equal layers have equal digests.
const MTIME: u64 = 1_700_000_000;

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (what nearly every registry image uses).
    Gzip,
    /// zstd (OCI `tar+zstd`).
    Zstd,
}

impl Compression {
    /// `raw` compressed this way.
    pub fn compress(self, raw: &[u8]) -> anyhow::Result<Vec<u8>> {
        match self {
            Compression::None => Ok(raw.to_vec()),
            Compression::Gzip => crate::oci_archive::gzip(raw).context("gzip"),
            Compression::Zstd => zstd::encode_all(raw, 3).context("zstd"),
        }
    }

    /// The layer media type in a manifest of `kind`.
    pub fn layer_media_type(self, kind: ManifestKind) -> &'static str {
        match (kind, self) {
            (ManifestKind::Oci, Compression::None) => "application/vnd.oci.image.layer.v1.tar",
            (ManifestKind::Oci, Compression::Gzip) => "application/vnd.oci.image.layer.v1.tar+gzip",
            (ManifestKind::Oci, Compression::Zstd) => "application/vnd.oci.image.layer.v1.tar+zstd",
            (ManifestKind::Docker, Compression::None) => {
                "application/vnd.docker.image.rootfs.diff.tar"
            }
            (ManifestKind::Docker, Compression::Gzip) => {
                "application/vnd.docker.image.rootfs.diff.tar.gzip"
            }
            (ManifestKind::Docker, Compression::Zstd) => {
                "application/vnd.docker.image.rootfs.diff.tar.zstd"
            }
        }
    }
}

/// What a tar entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file with this content.
    File(Vec<u8>),
    /// A directory.
    Dir,
    /// A symlink to this target (written verbatim).
    Symlink(String),
    /// A hard link to this earlier entry name (written verbatim).
    Hardlink(String),
    /// A character device node.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

/// One tar entry. Nothing is validated or normalised: `name` and link targets go into the
/// archive byte for byte, so `..`, absolute names and escaping links are all expressible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry name as written.
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Permission bits, including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
}

/// How busybox applets point at the binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkStyle {
    /// `bin/sh -> busybox`.
    Symlink,
    /// `bin/sh` hard-linked to `bin/busybox`.
    Hardlink,
}

/// A layer that tries to write outside its snapshot or create what it must not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// A file named `../../…/<target>`.
    DotDot,
    /// A file named `/<target>`.
    Absolute,
    /// `evil -> <target's dir>` (absolute), then a file `evil/<target's name>`.
    SymlinkEscape,
    /// `evil-hardlink` hard-linked to `../../…/<target>`, then a regular file of the same
    /// name, which a naive unpacker writes through the link into `target`.
    HardlinkEscape,
    /// `dev/evil-mem`: a char device node (1, 1), i.e. the host's `/dev/mem`, mode 0666.
    CharDevice,
    /// `bin/evil-suid`: setuid, setgid, world-writable, owned by root.
    SetuidWorldWritable,
}

/// An image layer being built: entries in archive order.
#[derive(Debug, Clone, Default)]
pub struct Layer {
    entries: Vec<Entry>,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer::default()
    }

    /// The entries so far.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Appends `entry` as is (the escape hatch for anything the helpers do not cover).
    pub fn push(mut self, entry: Entry) -> Layer {
        self.entries.push(entry);
        self
    }

    /// A regular file owned by root.
    pub fn file(self, path: &str, bytes: impl Into<Vec<u8>>, mode: u32) -> Layer {
        self.file_as(path, bytes, mode, 0, 0)
    }

    /// A regular file owned by `uid:gid`.
    pub fn file_as(
        self,
        path: &str,
        bytes: impl Into<Vec<u8>>,
        mode: u32,
        uid: u64,
        gid: u64,
    ) -> Layer {
        self.push(Entry {
            name: path.to_string(),
            kind: EntryKind::File(bytes.into()),
            mode,
            uid,
            gid,
        })
    }

    /// A directory owned by root (written `path/`, as docker does).
    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.dir_as(path, mode, 0, 0)
    }

    /// A directory owned by `uid:gid`.
    pub fn dir_as(self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        let name = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        self.push(Entry {
            name,
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
        })
    }

    /// A symlink `path -> target`.
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.push(Entry {
            name: path.to_string(),
            kind: EntryKind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        })
    }

    /// A hard link `path` to the earlier entry `target`.
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.push(Entry {
            name: path.to_string(),
            kind: EntryKind::Hardlink(target.to_string()),
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
    }

    /// A char device node.
    pub fn char_device(self, path: &str, major: u32, minor: u32, mode: u32) -> Layer {
        self.push(Entry {
            name: path.to_string(),
            kind: EntryKind::CharDevice { major, minor },
            mode,
            uid: 0,
            gid: 0,
        })
    }

    /// An OCI whiteout: `path` from lower layers is deleted (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Layer {
        let path = path.trim_end_matches('/');
        let name = match path.rsplit_once('/') {
            Some((dir, base)) => format!("{dir}/.wh.{base}"),
            None => format!(".wh.{path}"),
        };
        self.file(&name, Vec::new(), 0o644)
    }

    /// An opaque marker: `dir`'s content from lower layers is hidden (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Layer {
        let dir = dir.trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), Vec::new(), 0o644)
    }

    /// A minimal runnable root: `bin/busybox` (busybox-static) with every applet linked to
    /// it, `etc/passwd`, `etc/group`, and the usual empty dirs.
    pub fn busybox(self, style: LinkStyle) -> anyhow::Result<Layer> {
        let binary = std::fs::read(BUSYBOX)
            .with_context(|| format!("read {BUSYBOX} (apt-get install busybox-static)"))?;
        let list = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .context("busybox --list")?;
        let mut layer = self;
        for (dir, mode) in [
            ("bin", 0o755),
            ("etc", 0o755),
            ("dev", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("root", 0o700),
            ("tmp", 0o1777),
        ] {
            layer = layer.dir(dir, mode);
        }
        layer = layer
            .file("bin/busybox", binary, 0o755)
            .file(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
                0o644,
            )
            .file("etc/group", "root:x:0:\nnogroup:x:65534:\n", 0o644);
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "busybox" || applet.contains('/') {
                continue;
            }
            let path = format!("bin/{applet}");
            layer = match style {
                LinkStyle::Symlink => layer.symlink(&path, "busybox"),
                LinkStyle::Hardlink => layer.hardlink(&path, "bin/busybox"),
            };
        }
        Ok(layer)
    }

    /// Adds the entries of `attack`, aimed at the host path `target` (absolute; a file the
    /// test creates or checks stays absent). See [`Attack`] for what each writes.
    pub fn attack(self, attack: Attack, target: &Path) -> Layer {
        let target = target.to_string_lossy();
        let relative = target.trim_start_matches('/');
        let climb = "../".repeat(16);
        match attack {
            Attack::DotDot => self.file(&format!("{climb}{relative}"), ATTACK_PAYLOAD, 0o644),
            Attack::Absolute => self.file(&format!("/{relative}"), ATTACK_PAYLOAD, 0o644),
            Attack::SymlinkEscape => {
                let (dir, base) = relative.rsplit_once('/').unwrap_or(("", relative));
                self.symlink("evil", &format!("/{dir}")).file(
                    &format!("evil/{base}"),
                    ATTACK_PAYLOAD,
                    0o644,
                )
            }
            Attack::HardlinkEscape => self
                .hardlink("evil-hardlink", &format!("{climb}{relative}"))
                .file("evil-hardlink", ATTACK_PAYLOAD, 0o644),
            Attack::CharDevice => self
                .dir("dev", 0o755)
                .char_device("dev/evil-mem", 1, 1, 0o666),
            Attack::SetuidWorldWritable => {
                self.dir("bin", 0o755)
                    .file("bin/evil-suid", ATTACK_PAYLOAD, 0o6777)
            }
        }
    }

    /// The uncompressed tar. Names and link targets longer than the header's 100 bytes get
    /// a GNU long-name record, as GNU tar and docker write them.
    pub fn tar(&self) -> anyhow::Result<Vec<u8>> {
        let mut out = tar::Builder::new(Vec::new());
        for entry in &self.entries {
            append_entry(&mut out, entry).with_context(|| format!("tar entry {:?}", entry.name))?;
        }
        out.into_inner().context("finish tar")
    }

    /// The layer as a blob compressed with `compression`.
    pub fn build(&self, compression: Compression) -> anyhow::Result<LayerBlob> {
        LayerBlob::from_tar(&self.tar()?, compression)
    }
}

fn append_entry(out: &mut tar::Builder<Vec<u8>>, entry: &Entry) -> anyhow::Result<()> {
    let (ty, data, link): (tar::EntryType, &[u8], Option<&str>) = match &entry.kind {
        EntryKind::File(bytes) => (tar::EntryType::Regular, bytes, None),
        EntryKind::Dir => (tar::EntryType::Directory, &[], None),
        EntryKind::Symlink(t) => (tar::EntryType::Symlink, &[], Some(t)),
        EntryKind::Hardlink(t) => (tar::EntryType::Link, &[], Some(t)),
        EntryKind::CharDevice { .. } => (tar::EntryType::Char, &[], None),
        EntryKind::BlockDevice { .. } => (tar::EntryType::Block, &[], None),
        EntryKind::Fifo => (tar::EntryType::Fifo, &[], None),
    };
    let name = entry.name.as_bytes();
    if name.len() > 100 {
        append_long(out, tar::EntryType::GNULongName, name)?;
    }
    if let Some(link) = link.filter(|l| l.len() > 100) {
        append_long(out, tar::EntryType::GNULongLink, link.as_bytes())?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(data.len() as u64);
    h.set_mode(entry.mode);
    h.set_uid(entry.uid);
    h.set_gid(entry.gid);
    h.set_mtime(MTIME);
    if let EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } =
        entry.kind
    {
        h.set_device_major(major)?;
        h.set_device_minor(minor)?;
    }
    // Raw byte copies: tar's own setters refuse `..` and absolute names.
    let old = h.as_old_mut();
    copy_truncated(&mut old.name, name);
    if let Some(link) = link {
        copy_truncated(&mut old.linkname, link.as_bytes());
    }
    h.set_cksum();
    out.append(&h, data)?;
    Ok(())
}

fn append_long(
    out: &mut tar::Builder<Vec<u8>>,
    ty: tar::EntryType,
    value: &[u8],
) -> anyhow::Result<()> {
    let mut data = value.to_vec();
    data.push(0);
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(ty);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    copy_truncated(&mut h.as_old_mut().name, b"././@LongLink");
    h.set_cksum();
    out.append(&h, data.as_slice())?;
    Ok(())
}

fn copy_truncated(field: &mut [u8; 100], value: &[u8]) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    field[n..].fill(0);
}

/// A layer as the registry stores it.
#[derive(Clone)]
pub struct LayerBlob {
    /// The (compressed) bytes and their digest.
    pub blob: Blob,
    /// `sha256:` of the uncompressed tar, written into the config's `rootfs.diff_ids`.
    /// Overwrite it to make an image whose diff_id does not match its layer.
    pub diff_id: String,
    /// How `blob` is compressed.
    pub compression: Compression,
    /// Replaces the media type derived from `compression` in the manifest.
    pub media_type: Option<String>,
    /// Replaces the real size in the manifest's descriptor (the registry accepts a wrong
    /// size and keeps serving the real bytes).
    pub descriptor_size: Option<u64>,
}

impl fmt::Debug for LayerBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LayerBlob")
            .field("digest", &self.blob.digest)
            .field("size", &self.blob.bytes.len())
            .field("diff_id", &self.diff_id)
            .field("compression", &self.compression)
            .field("media_type", &self.media_type)
            .field("descriptor_size", &self.descriptor_size)
            .finish()
    }
}

impl LayerBlob {
    /// `tar` compressed with `compression`.
    pub fn from_tar(tar: &[u8], compression: Compression) -> anyhow::Result<LayerBlob> {
        Ok(LayerBlob {
            blob: Blob::new(compression.compress(tar)?),
            diff_id: sha256_digest(tar),
            compression,
            media_type: None,
            descriptor_size: None,
        })
    }

    /// A gzip layer whose stream is cut: valid gzip header, half the deflate data, no
    /// trailer. Its digest is right (the registry serves it faithfully); decompressing fails.
    pub fn broken_gzip(tar: &[u8]) -> anyhow::Result<LayerBlob> {
        let mut blob = LayerBlob::from_tar(tar, Compression::Gzip)?;
        let mut bytes = std::mem::take(&mut blob.blob.bytes);
        ensure!(bytes.len() > 20, "layer too small to break");
        bytes.truncate(10 + (bytes.len() - 18) / 2);
        blob.blob = Blob::new(bytes);
        Ok(blob)
    }

    /// The blob digest.
    pub fn digest(&self) -> &str {
        &self.blob.digest
    }

    fn descriptor(&self, kind: ManifestKind) -> Value {
        json!({
            "mediaType": self.media_type.as_deref()
                .unwrap_or(self.compression.layer_media_type(kind)),
            "digest": self.blob.digest,
            "size": self.descriptor_size.unwrap_or(self.blob.bytes.len() as u64),
        })
    }
}

/// Which manifest family an image or index uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManifestKind {
    /// OCI image manifest / index.
    Oci,
    /// Docker schema 2 manifest / manifest list.
    Docker,
}

/// An OS/architecture/variant triple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// `linux`.
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`.
    pub architecture: String,
    /// `v8`, `v7`, …
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch[/variant]`, e.g. `linux/arm/v7`.
    pub fn parse(s: &str) -> anyhow::Result<Platform> {
        let mut parts = s.split('/');
        let (Some(os), Some(arch)) = (parts.next(), parts.next()) else {
            bail!("platform {s:?} is not os/arch[/variant]");
        };
        let variant = parts.next().map(str::to_string);
        ensure!(parts.next().is_none(), "platform {s:?} has too many parts");
        Ok(Platform {
            os: os.to_string(),
            architecture: arch.to_string(),
            variant,
        })
    }

    /// The platform this test runs on (what a pull must choose from an index).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(str::to_string),
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({ "architecture": self.architecture, "os": self.os });
        if let Some(variant) = &self.variant {
            v["variant"] = json!(variant);
        }
        v
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The parts of an OCI image config that a runtime reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageConfig {
    /// Written as `os`, `architecture`, `variant`.
    pub platform: Platform,
    /// `config.Entrypoint` (absent when None).
    pub entrypoint: Option<Vec<String>>,
    /// `config.Cmd` (absent when None).
    pub cmd: Option<Vec<String>>,
    /// `config.Env`.
    pub env: Vec<String>,
    /// `config.User`.
    pub user: Option<String>,
    /// `config.WorkingDir`.
    pub working_dir: Option<String>,
    /// `config.StopSignal`.
    pub stop_signal: Option<String>,
    /// `config.Labels`.
    pub labels: BTreeMap<String, String>,
}

impl Default for ImageConfig {
    /// The host platform, `Cmd ["sh"]` and a `PATH`.
    fn default() -> Self {
        ImageConfig {
            platform: Platform::host(),
            entrypoint: None,
            cmd: Some(vec!["sh".into()]),
            env: vec!["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()],
            user: None,
            working_dir: None,
            stop_signal: None,
            labels: BTreeMap::new(),
        }
    }
}

impl ImageConfig {
    /// The config JSON for layers with these `diff_ids`, one history entry per layer.
    pub fn to_json(&self, diff_ids: &[String]) -> Value {
        let mut config = serde_json::Map::new();
        let mut put = |key: &str, v: Value| {
            config.insert(key.to_string(), v);
        };
        if let Some(e) = &self.entrypoint {
            put("Entrypoint", json!(e));
        }
        if let Some(c) = &self.cmd {
            put("Cmd", json!(c));
        }
        if !self.env.is_empty() {
            put("Env", json!(self.env));
        }
        if let Some(u) = &self.user {
            put("User", json!(u));
        }
        if let Some(w) = &self.working_dir {
            put("WorkingDir", json!(w));
        }
        if let Some(s) = &self.stop_signal {
            put("StopSignal", json!(s));
        }
        if !self.labels.is_empty() {
            put("Labels", json!(self.labels));
        }
        let history: Vec<Value> = (0..diff_ids.len())
            .map(|i| {
                json!({
                    "created": "2024-01-01T00:00:00Z",
                    "created_by": format!("crius integration tests: layer {i}"),
                })
            })
            .collect();
        let mut v = self.platform.to_json();
        v["created"] = json!("2024-01-01T00:00:00Z");
        v["config"] = Value::Object(config);
        v["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
        v["history"] = json!(history);
        v
    }
}

/// One single-platform image: config plus layers, in the manifest flavour `kind`.
#[derive(Debug, Clone)]
pub struct Image {
    /// OCI or Docker schema 2.
    pub kind: ManifestKind,
    /// What goes into the config blob.
    pub config: ImageConfig,
    /// Bottom layer first.
    pub layers: Vec<LayerBlob>,
}

impl Image {
    /// An OCI image.
    pub fn new(config: ImageConfig, layers: Vec<LayerBlob>) -> Image {
        Image {
            kind: ManifestKind::Oci,
            config,
            layers,
        }
    }

    /// The same image with a Docker schema 2 manifest.
    pub fn docker(mut self) -> Image {
        self.kind = ManifestKind::Docker;
        self
    }

    /// The manifest's media type.
    pub fn media_type(&self) -> &'static str {
        match self.kind {
            ManifestKind::Oci => OCI_MANIFEST,
            ManifestKind::Docker => DOCKER_MANIFEST,
        }
    }

    /// The config blob.
    pub fn config_blob(&self) -> anyhow::Result<Blob> {
        let diff_ids: Vec<String> = self.layers.iter().map(|l| l.diff_id.clone()).collect();
        Ok(Blob::new(serde_json::to_vec(
            &self.config.to_json(&diff_ids),
        )?))
    }

    /// The manifest blob (its digest is what a pull by digest names).
    pub fn manifest_blob(&self) -> anyhow::Result<Blob> {
        let config = self.config_blob()?;
        let config_type = match self.kind {
            ManifestKind::Oci => OCI_CONFIG,
            ManifestKind::Docker => DOCKER_CONFIG,
        };
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|l| l.descriptor(self.kind))
            .collect();
        Ok(Blob::new(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": self.media_type(),
            "config": {
                "mediaType": config_type,
                "digest": config.digest,
                "size": config.bytes.len(),
            },
            "layers": layers,
        }))?))
    }
}

/// A multi-platform index (OCI) or manifest list (Docker).
#[derive(Debug, Clone)]
pub struct Index {
    /// OCI index or Docker manifest list.
    pub kind: ManifestKind,
    /// One image per platform (each one's `config.platform` goes into the index).
    pub images: Vec<Image>,
}

impl Index {
    /// An index of `kind` over `images`.
    pub fn new(kind: ManifestKind, images: Vec<Image>) -> Index {
        Index { kind, images }
    }

    /// The index's media type.
    pub fn media_type(&self) -> &'static str {
        match self.kind {
            ManifestKind::Oci => OCI_INDEX,
            ManifestKind::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    /// The index blob.
    pub fn index_blob(&self) -> anyhow::Result<Blob> {
        let mut manifests = Vec::new();
        for image in &self.images {
            let m = image.manifest_blob()?;
            manifests.push(json!({
                "mediaType": image.media_type(),
                "digest": m.digest,
                "size": m.bytes.len(),
                "platform": image.config.platform.to_json(),
            }));
        }
        Ok(Blob::new(serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": self.media_type(),
            "manifests": manifests,
        }))?))
    }
}

/// linux/amd64, linux/arm64/v8 and linux/arm/v7 images, each with a single layer whose
/// `etc/platform` names its platform; the host platform's image also carries busybox, so it
/// runs. A pull that picks the wrong manifest shows up in `etc/platform`.
pub fn platform_index(kind: ManifestKind, compression: Compression) -> anyhow::Result<Index> {
    let host = Platform::host();
    let mut images = Vec::new();
    for p in ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"] {
        let platform = Platform::parse(p)?;
        let mut layer = Layer::new();
        if platform == host {
            layer = layer.busybox(LinkStyle::Symlink)?;
        } else {
            layer = layer.dir("etc", 0o755);
        }
        let layer = layer.file("etc/platform", format!("{p}\n"), 0o644);
        let config = ImageConfig {
            platform,
            ..ImageConfig::default()
        };
        images.push(Image {
            kind,
            config,
            layers: vec![layer.build(compression)?],
        });
    }
    Ok(Index::new(kind, images))
}

/// A pull benchmark image: `layers` gzip layers holding about `total_bytes` of
/// deterministic data (4 KiB runs alternating xorshift noise and zeros, so gzip roughly
/// halves it) in files of at most 4 MiB; layer 0 also holds busybox, so it runs.
pub fn big_image(layers: usize, total_bytes: usize) -> anyhow::Result<Image> {
    ensure!(layers > 0, "big_image needs at least one layer");
    const FILE: usize = 4 << 20;
    let per_layer = total_bytes / layers;
    let mut blobs = Vec::with_capacity(layers);
    for i in 0..layers {
        let mut layer = if i == 0 {
            Layer::new().busybox(LinkStyle::Symlink)?
        } else {
            Layer::new()
        };
        layer = layer.dir("data", 0o755).dir(&format!("data/{i}"), 0o755);
        let mut left = per_layer;
        let mut j = 0;
        while left > 0 {
            let n = left.min(FILE);
            let seed = ((i as u64) << 32) | j as u64;
            layer = layer.file(&format!("data/{i}/{j}"), noise(seed, n), 0o644);
            left -= n;
            j += 1;
        }
        blobs.push(layer.build(Compression::Gzip)?);
    }
    Ok(Image::new(ImageConfig::default(), blobs))
}

/// `len` bytes: 4 KiB of xorshift64 output from `seed`, then 4 KiB of zeros, repeated.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for (k, chunk) in out.chunks_mut(4096).enumerate() {
        if k % 2 == 1 {
            continue;
        }
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
    }
    out
}

/// An HTTP response, body read in full.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `sha256:` of the body.
    pub fn body_digest(&self) -> String {
        sha256_digest(&self.body)
    }
}

/// Every manifest type, for `Accept` (without it distribution may not serve an index).
const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
    application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, \
    application/vnd.docker.distribution.manifest.v2+json";

/// A registry v2 API client: just enough to push test images and read them back.
#[derive(Clone)]
pub struct RegistryClient {
    base: String,
    auth: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .field("auth", &self.auth.is_some())
            .finish()
    }
}

impl RegistryClient {
    /// A client for the plain-HTTP registry at `host` (`127.0.0.1:port`), without
    /// credentials. Needs a tokio runtime when used.
    pub fn new(host: &str) -> RegistryClient {
        RegistryClient {
            base: format!("http://{host}"),
            auth: None,
            http: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The same client sending HTTP basic auth on every request.
    pub fn with_basic_auth(mut self, user: &str, password: &str) -> RegistryClient {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.auth = Some(format!("Basic {token}"));
        self
    }

    /// Sends one request; `target` is a path (`/v2/…`) or an absolute URL (upload
    /// locations). Any status is returned; only transport errors fail.
    pub async fn request(
        &self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<HttpResponse> {
        let uri = if target.starts_with("http://") {
            target.to_string()
        } else {
            format!("{}{target}", self.base)
        };
        let mut req = hyper::Request::builder()
            .method(hyper::Method::from_bytes(method.as_bytes())?)
            .uri(&uri);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(auth) = &self.auth {
            req = req.header("authorization", auth);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .with_context(|| format!("{method} {uri}"))?;
        let send = async {
            let resp = self.http.request(req).await?;
            let status = resp.status().as_u16();
            let headers = resp
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let body = resp.into_body().collect().await?.to_bytes().to_vec();
            anyhow::Ok(HttpResponse {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(120), send)
            .await
            .with_context(|| format!("{method} {uri}: no answer in 120 s"))?
            .with_context(|| format!("{method} {uri}"))
    }

    /// `GET target`.
    pub async fn get(&self, target: &str) -> anyhow::Result<HttpResponse> {
        self.request("GET", target, &[], Vec::new()).await
    }

    /// `GET /v2/<repo>/manifests/<reference>`, accepting every manifest and index type.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> anyhow::Result<HttpResponse> {
        self.request(
            "GET",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("accept", ACCEPT_MANIFESTS)],
            Vec::new(),
        )
        .await
    }

    /// `GET /v2/<repo>/blobs/<digest>`.
    pub async fn get_blob(&self, repo: &str, digest: &str) -> anyhow::Result<HttpResponse> {
        self.get(&format!("/v2/{repo}/blobs/{digest}")).await
    }

    /// Whether `repo` already has blob `digest`. A 5xx is asked again a few times:
    /// docker-registry 2.8 has answered a HEAD with 500 while another push of the same
    /// blob was being committed (seen once in CI).
    pub async fn blob_exists(&self, repo: &str, digest: &str) -> anyhow::Result<bool> {
        let mut attempt = 0;
        loop {
            let resp = self
                .request(
                    "HEAD",
                    &format!("/v2/{repo}/blobs/{digest}"),
                    &[],
                    Vec::new(),
                )
                .await?;
            match resp.status {
                200 => return Ok(true),
                404 => return Ok(false),
                s if (500..600).contains(&s) && attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                s => bail!("HEAD blob {digest} in {repo}: HTTP {s}"),
            }
        }
    }

    /// Uploads `blob` to `repo` (monolithic: `POST` an upload, `PUT` the bytes with
    /// `?digest=`), unless it is already there.
    pub async fn push_blob(&self, repo: &str, blob: &Blob) -> anyhow::Result<()> {
        if self.blob_exists(repo, &blob.digest).await? {
            return Ok(());
        }
        let start = self
            .request(
                "POST",
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Vec::new(),
            )
            .await?;
        if start.status != 202 {
            bail!(
                "start upload to {repo}: HTTP {}: {}",
                start.status,
                String::from_utf8_lossy(&start.body)
            );
        }
        let location = start
            .header("location")
            .context("upload start answered without Location")?;
        let sep = if location.contains('?') { '&' } else { '?' };
        let target = format!("{location}{sep}digest={}", blob.digest);
        let done = self
            .request(
                "PUT",
                &target,
                &[("content-type", "application/octet-stream")],
                blob.bytes.clone(),
            )
            .await?;
        if done.status != 201 {
            bail!(
                "upload blob {} to {repo}: HTTP {}: {}",
                blob.digest,
                done.status,
                String::from_utf8_lossy(&done.body)
            );
        }
        Ok(())
    }

    /// `PUT /v2/<repo>/manifests/<reference>` (a tag or the digest); returns the digest.
    pub async fn push_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> anyhow::Result<String> {
        let digest = sha256_digest(bytes);
        let resp = self
            .request(
                "PUT",
                &format!("/v2/{repo}/manifests/{reference}"),
                &[("content-type", media_type)],
                bytes.to_vec(),
            )
            .await?;
        if resp.status != 201 {
            bail!(
                "put manifest {repo}:{reference}: HTTP {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            );
        }
        if let Some(served) = resp.header("docker-content-digest") {
            ensure!(
                served == digest,
                "registry stored manifest {repo}:{reference} as {served}, expected {digest}"
            );
        }
        Ok(digest)
    }

    /// Pushes `image`'s layers, config and manifest as `repo:tag`; returns the manifest
    /// digest.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &Image) -> anyhow::Result<String> {
        for layer in &image.layers {
            self.push_blob(repo, &layer.blob).await?;
        }
        self.push_blob(repo, &image.config_blob()?).await?;
        let manifest = image.manifest_blob()?;
        self.push_manifest(repo, tag, image.media_type(), &manifest.bytes)
            .await
    }

    /// Pushes every image of `index` by digest, then the index as `repo:tag`; returns the
    /// index digest.
    pub async fn push_index(&self, repo: &str, tag: &str, index: &Index) -> anyhow::Result<String> {
        for image in &index.images {
            let digest = image.manifest_blob()?.digest;
            self.push_image(repo, &digest, image).await?;
        }
        let blob = index.index_blob()?;
        self.push_manifest(repo, tag, index.media_type(), &blob.bytes)
            .await
    }
}

/// Pushes `image` as `repo:tag`, then corrupts the stored bytes of layer `layer` (see
/// [`Registry::corrupt_blob`]): the registry serves them under the digest the manifest
/// names, with the right size. The blob is shared by every repo of this registry that has
/// it. Returns the manifest digest.
pub async fn push_image_corrupt_layer(
    registry: &Registry,
    repo: &str,
    tag: &str,
    image: &Image,
    layer: usize,
) -> anyhow::Result<String> {
    let target = image
        .layers
        .get(layer)
        .with_context(|| format!("image has no layer {layer}"))?;
    let digest = registry.client().push_image(repo, tag, image).await?;
    registry.corrupt_blob(target.digest())?;
    Ok(digest)
}
