//! A real registry (Debian's `docker-registry`, the CNCF distribution v2 server) on a loopback
//! port with its storage in a temp dir, so image pulls are tested against the server real
//! clusters talk to. Each instance owns its port and storage; dropping it kills the server.
//!
//! Plain HTTP by default: distribution's htpasswd auth works without TLS (its docs recommend
//! TLS, the server does not enforce it), and crius's registry tests run on loopback. The TLS
//! mode ([`RegistryTls`], certificates from [`TestPki`]) serves HTTPS and can require client
//! certificates; [`RegistryClient`] speaks plain HTTP only, so images are pushed to a plain
//! registry whose storage the TLS one then serves ([`Registry::start_tls`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::host;
use crate::image_builder::RegistryClient;

/// The registry binary on Debian.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How a registry is set up.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `(user, password)`: require HTTP basic auth against a bcrypt htpasswd file.
    pub htpasswd: Option<(String, String)>,
}

/// `http.tls` of a registry: its certificate and key, and the CAs whose client certificates
/// it requires (none: no client certificate asked for).
#[derive(Debug, Clone)]
pub struct RegistryTls {
    /// PEM server certificate (its SAN must name 127.0.0.1).
    pub certificate: PathBuf,
    /// PEM key of `certificate`.
    pub key: PathBuf,
    /// `http.tls.clientcas`: PEM CAs; when non-empty every client must present a
    /// certificate one of them signed.
    pub client_cas: Vec<PathBuf>,
}

/// A running `docker-registry serve`.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    addr: String,
    opts: RegistryOptions,
    /// Serve HTTPS (`http.tls`).
    tls: Option<RegistryTls>,
    /// Another registry's storage root served instead of one of its own.
    storage: Option<PathBuf>,
}

impl Registry {
    /// Starts a registry on a free loopback port and waits until `GET /v2/` answers.
    pub fn start(opts: RegistryOptions) -> anyhow::Result<Registry> {
        Registry::start_with(opts, None, None)
    }

    /// Starts an HTTPS registry (see [`RegistryTls`]) serving `storage`, another registry's
    /// [`Registry::storage_dir`] (images are pushed there over plain HTTP), or storage of its
    /// own when None.
    pub fn start_tls(tls: RegistryTls, storage: Option<PathBuf>) -> anyhow::Result<Registry> {
        Registry::start_with(RegistryOptions::default(), Some(tls), storage)
    }

    fn start_with(
        opts: RegistryOptions,
        tls: Option<RegistryTls>,
        storage: Option<PathBuf>,
    ) -> anyhow::Result<Registry> {
        let dir = tempfile::Builder::new()
            .prefix("crius-registry-")
            .tempdir_in(host::scratch_dir())
            .context("registry temp dir")?;
        if let Some((user, password)) = &opts.htpasswd {
            write_htpasswd(&dir.path().join("htpasswd"), user, password)?;
        }
        let mut reg = Registry {
            dir,
            child: None,
            addr: String::new(),
            opts,
            tls,
            storage,
        };
        // The port is picked by binding :0 and released before the registry binds it, so
        // another process can take it in between: retry on a fresh port when that happens.
        let mut last = None;
        for _ in 0..5 {
            reg.addr = format!("127.0.0.1:{}", free_port()?);
            match reg.spawn() {
                Ok(()) => return Ok(reg),
                Err(e) if format!("{e:#}").contains("address already in use") => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no free port")))
            .context("docker-registry could not bind a port")
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The image-reference host (`127.0.0.1:<port>`), e.g. `{host}/library/busybox:1`.
    pub fn host(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:<port>` (`https://` in TLS mode).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The `(user, password)` the registry requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.opts
            .htpasswd
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// A client for this registry, logged in when it requires credentials.
    pub fn client(&self) -> RegistryClient {
        let client = RegistryClient::new(&self.addr);
        match &self.opts.htpasswd {
            Some((user, password)) => client.with_basic_auth(user, password),
            None => client,
        }
    }

    /// The instance's temp dir (config, log, storage).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Root of the filesystem storage driver.
    pub fn storage_dir(&self) -> PathBuf {
        match &self.storage {
            Some(s) => s.clone(),
            None => self.dir.path().join("storage"),
        }
    }

    /// Where the registry keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_path(&self, digest: &str) -> anyhow::Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .with_context(|| format!("not a sha256 digest: {digest}"))?;
        Ok(self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"))
    }

    /// Changes the stored bytes of blob `digest` in place, keeping their length, so the
    /// registry keeps serving them under `digest` (it does not re-verify what it stores):
    /// `Docker-Content-Digest` and `Content-Length` still agree with the manifest, and only
    /// a client that hashes what it received notices.
    ///
    /// For a gzip blob the header's MTIME field is rewritten: the stream still decompresses
    /// to the same tar, so neither gzip's CRC nor the diff_id can stand in for the digest
    /// check. Any other blob gets its middle byte inverted.
    pub fn corrupt_blob(&self, digest: &str) -> anyhow::Result<()> {
        let path = self.blob_path(digest)?;
        let mut bytes =
            std::fs::read(&path).with_context(|| format!("read blob {}", path.display()))?;
        // No FHCRC flag: nothing checks the header's bytes.
        if bytes.len() >= 10 && bytes[..3] == [0x1f, 0x8b, 0x08] && bytes[3] & 0x02 == 0 {
            for b in &mut bytes[4..8] {
                *b ^= 0x5a;
            }
        } else {
            let mid = bytes.len() / 2;
            let b = bytes
                .get_mut(mid)
                .with_context(|| format!("blob {digest} is empty: nothing to corrupt"))?;
            *b = !*b;
        }
        std::fs::write(&path, bytes).with_context(|| format!("write blob {}", path.display()))
    }

    /// Kills the registry (the port then refuses connections). Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the registry again on the same port and storage after [`Registry::stop`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Whether the server process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The registry's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// A loopback `host:port` where nothing listens: connecting is refused at once. The
    /// port stays bound (never listening) for the rest of the process, so no other test
    /// can start a server on it.
    pub fn down_addr() -> anyhow::Result<String> {
        static HELD: Mutex<Vec<tokio::net::TcpSocket>> = Mutex::new(Vec::new());
        let socket = tokio::net::TcpSocket::new_v4().context("socket")?;
        socket
            .bind(([127, 0, 0, 1], 0).into())
            .context("bind a loopback port")?;
        let addr = socket.local_addr().context("local_addr")?;
        HELD.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(socket);
        Ok(addr.to_string())
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let dir = self.dir.path();
        let auth = if self.opts.htpasswd.is_some() {
            format!(
                "auth:\n  htpasswd:\n    realm: crius-test\n    path: {}\n",
                dir.join("htpasswd").display()
            )
        } else {
            String::new()
        };
        let tls = match &self.tls {
            None => String::new(),
            Some(t) => {
                let mut s = format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    t.certificate.display(),
                    t.key.display()
                );
                if !t.client_cas.is_empty() {
                    s.push_str("    clientcas:\n");
                    for ca in &t.client_cas {
                        s.push_str(&format!("      - {}\n", ca.display()));
                    }
                }
                s
            }
        };
        // No blob descriptor cache: what is on disk is what is served.
        let config = format!(
            "version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: {addr}
  secret: crius-integration-test-secret
{tls}{auth}",
            storage = self.storage_dir().display(),
            addr = self.addr,
        );
        let cfg_path = dir.join("config.yml");
        std::fs::write(&cfg_path, config).context("write registry config")?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("registry.log"))
            .context("registry log")?;
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("registry log")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {REGISTRY_BIN} (apt-get install docker-registry)"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = probe_v2(&self.addr) {
                // A TLS listener answers plain HTTP with 400 ("client sent an HTTP request
                // to an HTTPS server"): it is up.
                let tls_up = self.tls.is_some() && status == 400;
                if status == 200 || status == 401 || tls_up {
                    return Ok(());
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                bail!("docker-registry exited with {status}: {}", self.log());
            }
            if Instant::now() > deadline {
                self.stop();
                bail!("docker-registry did not answer in 20 s: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind 127.0.0.1:0")?;
    Ok(listener.local_addr().context("local_addr")?.port())
}

/// `GET /v2/` over a fresh connection; the status code, or None if nothing answers yet.
fn probe_v2(addr: &str) -> Option<u16> {
    let mut stream =
        TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /v2/ HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A bcrypt htpasswd file (the only hash distribution accepts), made by apache2-utils.
fn write_htpasswd(path: &Path, user: &str, password: &str) -> anyhow::Result<()> {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .stdin(Stdio::null())
        .output()
        .context("run htpasswd (apt-get install apache2-utils)")?;
    if !out.status.success() {
        bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::write(path, out.stdout).with_context(|| format!("write {}", path.display()))
}

/// A throwaway PKI made with the `openssl` CLI in a directory: a CA, a server certificate for
/// 127.0.0.1 and a client certificate, all signed by the CA (ECDSA P-256, valid two days).
#[derive(Debug, Clone)]
pub struct TestPki {
    /// The CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate (SAN IP:127.0.0.1, serverAuth) and key.
    pub server_cert: PathBuf,
    /// Key of `server_cert`.
    pub server_key: PathBuf,
    /// Client certificate (clientAuth) and key.
    pub client_cert: PathBuf,
    /// Key of `client_cert` (PKCS#8).
    pub client_key: PathBuf,
}

impl TestPki {
    /// Generates the files under `dir` (created if missing), named `<prefix>-*.pem`.
    pub fn generate(dir: &Path, prefix: &str) -> anyhow::Result<TestPki> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let p = |name: &str| dir.join(format!("{prefix}-{name}"));
        let pki = TestPki {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server-key.pem"),
            client_cert: p("client.pem"),
            client_key: p("client-key.pem"),
        };
        let ca_key = p("ca-key.pem");
        // A fresh P-256 key, unencrypted, written to the path after `-keyout`.
        let new_key = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ];
        run_openssl(
            Command::new("openssl")
                .args(["req", "-x509", "-days", "2"])
                .args(new_key)
                .args(["-subj", &format!("/CN={prefix} test CA")])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&pki.ca),
        )?;
        for (serial, cert, key, cn, ext) in [
            (
                "1",
                &pki.server_cert,
                &pki.server_key,
                "127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "2",
                &pki.client_cert,
                &pki.client_key,
                "crius-test-client",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let csr = cert.with_extension("csr");
            let extfile = cert.with_extension("ext");
            std::fs::write(&extfile, format!("basicConstraints=CA:FALSE\n{ext}"))
                .with_context(|| format!("write {}", extfile.display()))?;
            run_openssl(
                Command::new("openssl")
                    .args(["req", "-new"])
                    .args(new_key)
                    .args(["-subj", &format!("/CN={cn}")])
                    .arg("-keyout")
                    .arg(key)
                    .arg("-out")
                    .arg(&csr),
            )?;
            run_openssl(
                Command::new("openssl")
                    .args(["x509", "-req", "-days", "2", "-set_serial", serial])
                    .arg("-in")
                    .arg(&csr)
                    .arg("-CA")
                    .arg(&pki.ca)
                    .arg("-CAkey")
                    .arg(&ca_key)
                    .arg("-extfile")
                    .arg(&extfile)
                    .arg("-out")
                    .arg(cert),
            )?;
        }
        Ok(pki)
    }
}

fn run_openssl(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .context("run openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
