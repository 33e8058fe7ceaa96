//! Talking to registries: per-host settings from `crius.toml` (mirrors, plain HTTP, extra
//! CAs, credentials), credentials from the CRI request, and the HTTP client.
//!
//! The wire protocol (token and basic auth flows, blob and manifest requests) is the
//! `oci-client` crate's: maintained by the ORAS/Krustlet people, async on reqwest, and it
//! streams blobs. Two of its traits shape this module: it caches credentials per registry for
//! the life of a client, so a pull with explicit credentials gets a client of its own (a
//! wrong password must not stick); and it has no TLS client certificates, so `crius.toml` has
//! no such key yet.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use serde::{Deserialize, Serialize};

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
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// Mirrors tried in order before the host itself: `https://mirror.example` or
    /// `http://127.0.0.1:5001` (the scheme says whether TLS is used).
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this host.
    #[serde(default)]
    pub insecure: bool,
    /// Extra PEM CA certificates trusted for registries.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
    /// Credentials used when the request carries none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
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

/// Registry access for the daemon: settings plus a shared anonymous client.
#[derive(Clone)]
pub struct Registries {
    cfg: Arc<RegistryConfig>,
    client_config: Arc<dyn Fn() -> ClientConfig + Send + Sync>,
    anonymous: Arc<oci_client::Client>,
}

impl std::fmt::Debug for Registries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registries")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Registries {
    /// Builds the client settings; unreadable CA files are an error naming the file.
    pub fn new(cfg: RegistryConfig) -> Result<Registries, ImageError> {
        let mut plain_http: Vec<String> = Vec::new();
        let mut roots: Vec<Vec<u8>> = Vec::new();
        for (host, h) in &cfg.hosts {
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
                let pem = std::fs::read(f).map_err(|e| {
                    ImageError::io(
                        format!("registry.hosts.{host:?}.ca_files: {}", f.display()),
                        e,
                    )
                })?;
                roots.push(pem);
            }
        }
        let downloads = cfg.max_concurrent_downloads.max(1);
        let client_config = Arc::new(move || ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http.clone()),
            extra_root_certificates: roots
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            max_concurrent_download: downloads,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            user_agent: concat!("crius/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        });
        let anonymous = Arc::new(oci_client::Client::new(client_config()));
        Ok(Registries {
            cfg: Arc::new(cfg),
            client_config,
            anonymous,
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

    /// A client for one pull: the shared one when anonymous, a fresh one with credentials.
    pub fn client(&self, auth: &RegistryAuth) -> Arc<oci_client::Client> {
        if *auth == RegistryAuth::Anonymous {
            self.anonymous.clone()
        } else {
            Arc::new(oci_client::Client::new((self.client_config)()))
        }
    }
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

/// Classifies an oci-client error and says what happened in plain words.
pub fn classify(e: &OciDistributionError) -> (RegistryFailure, String) {
    use OciDistributionError as E;
    match e {
        E::AuthenticationFailure(m) => (
            RegistryFailure::Unauthorized,
            format!("authentication failed: {m}"),
        ),
        E::UnauthorizedError { url } => (
            RegistryFailure::Unauthorized,
            format!("401 unauthorized at {url}"),
        ),
        E::ImageManifestNotFoundError(m) => (
            RegistryFailure::NotFound,
            format!("manifest not found: {m}"),
        ),
        E::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|x| format!("{:?}", x.code))
                .collect();
            let text = format!("registry error at {url}: {envelope}");
            let joined = codes.join(",").to_ascii_uppercase();
            let kind = if joined.contains("UNKNOWN") {
                RegistryFailure::NotFound
            } else if joined.contains("UNAUTHORIZED") || joined.contains("DENIED") {
                RegistryFailure::Unauthorized
            } else {
                RegistryFailure::Other
            };
            (kind, text)
        }
        E::ServerError { code, url, message } => {
            let kind = match code {
                401 | 403 => RegistryFailure::Unauthorized,
                404 => RegistryFailure::NotFound,
                _ => RegistryFailure::Other,
            };
            (kind, format!("HTTP {code} at {url}: {message}"))
        }
        E::RequestError(r) => {
            let kind = if r.is_connect() || r.is_timeout() {
                RegistryFailure::Unreachable
            } else {
                RegistryFailure::Other
            };
            (kind, format!("request failed: {}", error_chain(r)))
        }
        other => (RegistryFailure::Other, other.to_string()),
    }
}

/// An error and its sources on one line (reqwest hides the cause, e.g. "connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
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
}
