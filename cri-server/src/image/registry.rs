//! Talking to registries: per-host settings from `crius.toml` (mirrors, plain HTTP, extra
//! CAs, TLS client certificates, credentials), credentials from the CRI request, and the
//! HTTP clients the pulls use ([`distribution`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

pub mod distribution;

use self::distribution::{error_chain, DistributionError, RegistryAuth, RepositoryClient};
use super::{ImageError, RegistryFailure};

/// `[registry]` in `crius.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Layers fetched at once per daemon.
    #[serde(default = "default_downloads")]
    pub max_concurrent_downloads: usize,
    /// Per-host settings, keyed by `host[:port]` as it appears in references (`docker.io`).
    #[serde(default)]
    pub hosts: BTreeMap<String, HostConfig>,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            max_concurrent_downloads: default_downloads(),
            hosts: BTreeMap::new(),
        }
    }
}

fn default_downloads() -> usize {
    4
}

/// `[registry.hosts."<host>"]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawHostConfig")]
pub struct HostConfig {
    /// Mirrors tried in order before the host itself: `https://mirror.example` or
    /// `http://127.0.0.1:5001` (the scheme says whether TLS is used).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this host.
    pub insecure: bool,
    /// Extra PEM CA certificates trusted for registries.
    pub ca_files: Vec<PathBuf>,
    /// PEM certificate (chain) presented to this host when it asks for a client certificate;
    /// set together with `client_key`. Read at each pull, so a renewed pair is picked up.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (PKCS#8, PKCS#1 or SEC1).
    pub client_key: Option<PathBuf>,
    /// Credentials used when the request carries none.
    pub auth: Option<AuthConfig>,
}

impl HostConfig {
    /// The one rule serde cannot say: the client certificate and key come as a pair.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.client_cert, &self.client_key) {
            (Some(_), None) => {
                Err("client_cert is set but client_key is not: set both or neither".into())
            }
            (None, Some(_)) => {
                Err("client_key is set but client_cert is not: set both or neither".into())
            }
            _ => Ok(()),
        }
    }
}

/// [`HostConfig`] as written, validated on the way in so `crius.toml` errors name the keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHostConfig {
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    ca_files: Vec<PathBuf>,
    #[serde(default)]
    client_cert: Option<PathBuf>,
    #[serde(default)]
    client_key: Option<PathBuf>,
    #[serde(default)]
    auth: Option<AuthConfig>,
}

impl TryFrom<RawHostConfig> for HostConfig {
    type Error = String;

    fn try_from(r: RawHostConfig) -> Result<HostConfig, String> {
        let h = HostConfig {
            mirrors: r.mirrors,
            insecure: r.insecure,
            ca_files: r.ca_files,
            client_cert: r.client_cert,
            client_key: r.client_key,
            auth: r.auth,
        };
        h.validate()?;
        Ok(h)
    }
}

/// Registry credentials, in the CRI's shape (and the config's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    #[serde(default)]
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
    /// base64 of `user:password`.
    #[serde(default)]
    pub auth: String,
    /// An OAuth2 refresh token (sent as the password of the user `<token>`, Docker's
    /// convention).
    #[serde(default)]
    pub identity_token: String,
    /// A bearer token used as is.
    #[serde(default)]
    pub registry_token: String,
}

impl AuthConfig {
    /// The credentials to present; the error names the field that is malformed.
    pub fn to_registry_auth(&self) -> Result<RegistryAuth, String> {
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        if !self.username.is_empty() || !self.password.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(self.auth.trim())
                .map_err(|e| format!("auth.auth is not base64: {e}"))?;
            let s = String::from_utf8(raw).map_err(|_| "auth.auth is not UTF-8".to_string())?;
            let (u, p) = s
                .split_once(':')
                .ok_or_else(|| "auth.auth must encode user:password".to_string())?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        if !self.identity_token.is_empty() {
            return Ok(RegistryAuth::Basic(
                "<token>".into(),
                self.identity_token.clone(),
            ));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// One place to fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]` put into requests.
    pub host: String,
    /// A mirror (failure falls through to the next endpoint) rather than the origin.
    pub mirror: bool,
}

/// Registry access for the daemon: settings plus the HTTP clients (one shared, one per host
/// that presents a client certificate).
#[derive(Clone)]
pub struct Registries {
    cfg: Arc<RegistryConfig>,
    plain_http: Arc<Vec<String>>,
    roots: Arc<Vec<reqwest::Certificate>>,
    shared: reqwest::Client,
    with_identity: Arc<Mutex<HashMap<String, IdentityClient>>>,
}

/// A host's client presenting a certificate, and the PEM (cert then key) it was built from.
type IdentityClient = (Vec<u8>, reqwest::Client);

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Registries {
    /// Builds the shared client; an unreadable or non-PEM CA file, or a host with only half
    /// of a client certificate pair, is an error naming it.
    pub fn new(cfg: RegistryConfig) -> Result<Registries, ImageError> {
        let mut plain_http: Vec<String> = Vec::new();
        let mut roots: Vec<reqwest::Certificate> = Vec::new();
        for (host, h) in &cfg.hosts {
            h.validate().map_err(|m| {
                ImageError::InvalidArgument(format!("registry.hosts.{host:?}: {m}"))
            })?;
            if h.insecure {
                plain_http.push(host.clone());
            }
            for m in &h.mirrors {
                let (scheme_http, mhost) = split_mirror(m);
                if scheme_http {
                    plain_http.push(mhost);
                }
            }
            for f in &h.ca_files {
                let what = || format!("registry.hosts.{host:?}.ca_files: {}", f.display());
                let pem = std::fs::read(f).map_err(|e| ImageError::io(what(), e))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    ImageError::InvalidArgument(format!("{}: {}", what(), error_chain(&e)))
                })?;
                if certs.is_empty() {
                    return Err(ImageError::InvalidArgument(format!(
                        "{}: no PEM certificate in it",
                        what()
                    )));
                }
                roots.extend(certs);
            }
        }
        let shared = build_client(&roots, None)
            .map_err(|e| ImageError::Internal(format!("registry HTTP client: {e}")))?;
        Ok(Registries {
            cfg: Arc::new(cfg),
            plain_http: Arc::new(plain_http),
            roots: Arc::new(roots),
            shared,
            with_identity: Arc::default(),
        })
    }

    /// Layers fetched at once.
    pub fn max_concurrent_downloads(&self) -> usize {
        self.cfg.max_concurrent_downloads.max(1)
    }

    /// Mirrors first, then the origin.
    pub fn endpoints(&self, registry: &str) -> Vec<Endpoint> {
        let mut v: Vec<Endpoint> = self
            .cfg
            .hosts
            .get(registry)
            .map(|h| {
                h.mirrors
                    .iter()
                    .map(|m| Endpoint {
                        host: split_mirror(m).1,
                        mirror: true,
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.push(Endpoint {
            host: registry.to_string(),
            mirror: false,
        });
        v
    }

    /// The credentials for `registry`: the request's, else the config's, else anonymous.
    pub fn credentials(
        &self,
        registry: &str,
        request: Option<&AuthConfig>,
    ) -> Result<RegistryAuth, String> {
        if let Some(a) = request {
            let auth = a.to_registry_auth()?;
            if auth != RegistryAuth::Anonymous {
                return Ok(auth);
            }
        }
        match self.cfg.hosts.get(registry).and_then(|h| h.auth.as_ref()) {
            Some(a) => a.to_registry_auth(),
            None => Ok(RegistryAuth::Anonymous),
        }
    }

    /// A client for `repository` at `host` (an endpoint: the origin or a mirror) for one
    /// pull. A host with `client_cert` gets a client presenting it; its files are read now,
    /// and the error names the file that cannot be used.
    pub fn client(
        &self,
        host: &str,
        repository: &str,
        auth: RegistryAuth,
    ) -> Result<RepositoryClient, String> {
        let http = match self.cfg.hosts.get(host) {
            Some(HostConfig {
                client_cert: Some(cert),
                client_key: Some(key),
                ..
            }) => self.identity_client(host, cert, key)?,
            _ => self.shared.clone(),
        };
        let plain = self.plain_http.iter().any(|h| h == host);
        Ok(RepositoryClient::new(http, host, plain, repository, auth))
    }

    /// The client presenting `cert`/`key`, rebuilt when the files' contents changed.
    fn identity_client(
        &self,
        host: &str,
        cert: &Path,
        key: &Path,
    ) -> Result<reqwest::Client, String> {
        let read = |key_name: &str, p: &Path, marker: &str| -> Result<Vec<u8>, String> {
            let what = format!("registry.hosts.{host:?}.{key_name} {}", p.display());
            let pem = std::fs::read(p).map_err(|e| format!("{what}: {e}"))?;
            if !String::from_utf8_lossy(&pem).contains(marker) {
                return Err(format!("{what}: no PEM block containing {marker:?}"));
            }
            Ok(pem)
        };
        let mut pem = read("client_cert", cert, "CERTIFICATE-----")?;
        pem.push(b'\n');
        pem.extend(read("client_key", key, "PRIVATE KEY-----")?);
        let mut cache = self.with_identity.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, client)) = cache.get(host) {
            if *cached == pem {
                return Ok(client.clone());
            }
        }
        let pair = || {
            format!(
                "registry.hosts.{host:?}: client_cert {} with client_key {}",
                cert.display(),
                key.display()
            )
        };
        let identity = reqwest::Identity::from_pem(&pem)
            .map_err(|e| format!("{}: {}", pair(), error_chain(&e)))?;
        let client =
            build_client(&self.roots, Some(identity)).map_err(|e| format!("{}: {}", pair(), e))?;
        cache.insert(host.to_string(), (pem, client.clone()));
        Ok(client)
    }
}

/// A reqwest client trusting the system roots plus `roots`, presenting `identity` if any.
fn build_client(
    roots: &[reqwest::Certificate],
    identity: Option<reqwest::Identity>,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .tls_certs_merge(roots.iter().cloned())
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("crius/", env!("CARGO_PKG_VERSION")));
    if let Some(id) = identity {
        b = b.identity(id);
    }
    b.build().map_err(|e| error_chain(&e))
}

/// `http://h:p/path` → (true, `h:p`); `https://h` and bare `h` → (false, `h`).
fn split_mirror(m: &str) -> (bool, String) {
    let (http, rest) = if let Some(r) = m.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = m.strip_prefix("https://") {
        (false, r)
    } else {
        (false, m)
    };
    (http, rest.split('/').next().unwrap_or(rest).to_string())
}

/// Classifies a registry error and says what happened in plain words.
pub fn classify(e: &DistributionError) -> (RegistryFailure, String) {
    use DistributionError as E;
    let mut text = e.to_string();
    let kind = match e {
        E::Status { status, codes, .. } => {
            let joined = codes.join(",").to_ascii_uppercase();
            match status {
                401 | 403 => RegistryFailure::Unauthorized,
                404 => RegistryFailure::NotFound,
                _ if joined.contains("UNKNOWN") => RegistryFailure::NotFound,
                _ if joined.contains("UNAUTHORIZED") || joined.contains("DENIED") => {
                    RegistryFailure::Unauthorized
                }
                _ => RegistryFailure::Other,
            }
        }
        E::Auth { .. } => RegistryFailure::Unauthorized,
        E::Request { source, .. } => {
            if rejected_client_certificate(&text) {
                text.push_str(
                    " (the registry refused the TLS client certificate, or its absence: \
                     see client_cert and client_key for this host)",
                );
                RegistryFailure::Unauthorized
            } else if source.is_connect() || source.is_timeout() {
                RegistryFailure::Unreachable
            } else {
                RegistryFailure::Other
            }
        }
        E::TooLarge { .. } => RegistryFailure::Other,
    };
    (kind, text)
}

/// Whether an error chain holds a TLS alert refusing the client certificate.
fn rejected_client_certificate(chain: &str) -> bool {
    chain.contains("alert")
        && [
            "CertificateRequired",
            "BadCertificate",
            "UnknownCA",
            "CertificateUnknown",
            "AccessDenied",
            "CertificateExpired",
            "CertificateRevoked",
        ]
        .iter()
        .any(|a| chain.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_precedence_and_base64() {
        let mut hosts = BTreeMap::new();
        hosts.insert(
            "r.example".to_string(),
            HostConfig {
                mirrors: vec!["http://127.0.0.1:5001/v2".into()],
                auth: Some(AuthConfig {
                    username: "cfg".into(),
                    password: "p".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        let r = Registries::new(RegistryConfig {
            max_concurrent_downloads: 2,
            hosts,
        })
        .expect("config");
        assert_eq!(
            r.endpoints("r.example"),
            vec![
                Endpoint {
                    host: "127.0.0.1:5001".into(),
                    mirror: true
                },
                Endpoint {
                    host: "r.example".into(),
                    mirror: false
                },
            ]
        );
        assert_eq!(
            r.credentials("r.example", None),
            Ok(RegistryAuth::Basic("cfg".into(), "p".into()))
        );
        let req = AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:pw"),
            ..Default::default()
        };
        assert_eq!(
            r.credentials("r.example", Some(&req)),
            Ok(RegistryAuth::Basic("u".into(), "pw".into()))
        );
        let bad = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        assert!(r
            .credentials("x", Some(&bad))
            .expect_err("bad base64")
            .contains("auth.auth"));
        let tok = AuthConfig {
            registry_token: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            r.credentials("x", Some(&tok)),
            Ok(RegistryAuth::Bearer("t".into()))
        );
        assert_eq!(r.credentials("other", None), Ok(RegistryAuth::Anonymous));
    }

    #[test]
    fn client_certificate_keys_come_in_pairs() {
        let parse = |t: &str| toml::from_str::<RegistryConfig>(t).map_err(|e| e.to_string());
        let both = parse(
            "[hosts.\"r:5000\"]\nclient_cert = \"/c.pem\"\nclient_key = \"/k.pem\"\nca_files = [\"/ca.pem\"]\n",
        )
        .expect("a pair parses");
        let h = &both.hosts["r:5000"];
        assert_eq!(
            h.client_cert.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!(
            h.client_key.as_deref(),
            Some(std::path::Path::new("/k.pem"))
        );
        for half in ["client_cert = \"/c.pem\"", "client_key = \"/k.pem\""] {
            let e = parse(&format!("[hosts.\"r:5000\"]\n{half}\n")).expect_err("half a pair");
            assert!(e.contains("client_cert") && e.contains("client_key"), "{e}");
        }
        let e = parse("[hosts.\"r\"]\nclient_certs = \"/c\"\n").expect_err("unknown key");
        assert!(e.contains("client_certs"), "{e}");
        // Built in code, the same rule holds when the registries are set up.
        let mut cfg = RegistryConfig::default();
        cfg.hosts.insert(
            "r".into(),
            HostConfig {
                client_key: Some("/k.pem".into()),
                ..Default::default()
            },
        );
        let e = Registries::new(cfg).expect_err("half a pair").to_string();
        assert!(e.contains("client_cert") && e.contains("\"r\""), "{e}");
    }
}
