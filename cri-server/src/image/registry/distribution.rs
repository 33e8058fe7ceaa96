//! The pull side of the OCI distribution protocol over reqwest: manifests and blobs of one
//! repository at one host, with the registry auth flows (anonymous, HTTP basic, bearer
//! tokens from the realm a `401` names).
//!
//! crius has its own client rather than `oci-client` because registries may require TLS
//! client certificates, and `oci-client` builds its reqwest client without a way to present
//! one. The protocol subset a pull needs is small: `GET` a manifest, `GET` a blob, and the
//! token dance.

use std::sync::Mutex;

use base64::Engine as _;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::{ACCEPT, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::StatusCode;

/// Credentials presented to a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// No credentials.
    Anonymous,
    /// User and password: sent as HTTP basic auth, or to the token realm.
    Basic(String, String),
    /// A bearer token sent as is.
    Bearer(String),
}

/// What went wrong talking to a registry; each variant names the URL.
#[derive(Debug, thiserror::Error)]
pub enum DistributionError {
    /// No HTTP answer: connection, TLS, timeout, or the body broke off.
    #[error("{url}: {}", error_chain(source))]
    Request {
        /// what was requested.
        url: String,
        /// reqwest's error (its sources say why, e.g. the TLS alert).
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status.
    #[error("HTTP {status} at {url}: {message}")]
    Status {
        /// what was requested.
        url: String,
        /// the HTTP status.
        status: u16,
        /// the `code`s of the registry's error envelope (`MANIFEST_UNKNOWN`, …).
        codes: Vec<String>,
        /// the envelope's messages, or the body.
        message: String,
    },
    /// The token realm refused the credentials or answered nonsense.
    #[error("authentication at {url} failed: {message}")]
    Auth {
        /// the token realm.
        url: String,
        /// why.
        message: String,
    },
    /// A manifest (or config) longer than crius accepts.
    #[error("{url}: more than {limit} bytes")]
    TooLarge {
        /// what was requested.
        url: String,
        /// the limit.
        limit: u64,
    },
}

/// A blob's bytes as they arrive.
pub type BlobStream = BoxStream<'static, Result<Bytes, DistributionError>>;

/// Manifests larger than this are refused (the spec lets registries refuse above 4 MiB).
pub const MAX_MANIFEST: u64 = 8 << 20;

/// A client for one repository at one host, for the life of one pull. It keeps the
/// `Authorization` the registry last accepted, so only the first request pays for the
/// challenge.
pub struct RepositoryClient {
    http: reqwest::Client,
    base: String,
    repository: String,
    auth: RegistryAuth,
    authorization: Mutex<Option<String>>,
}

impl std::fmt::Debug for RepositoryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepositoryClient")
            .field("base", &self.base)
            .field("repository", &self.repository)
            .finish()
    }
}

impl RepositoryClient {
    /// `host` as it appears in references (`docker.io` is served by `registry-1.docker.io`);
    /// `plain_http` chooses `http://`.
    pub fn new(
        http: reqwest::Client,
        host: &str,
        plain_http: bool,
        repository: &str,
        auth: RegistryAuth,
    ) -> RepositoryClient {
        let host = if host == "docker.io" || host == "index.docker.io" {
            "registry-1.docker.io"
        } else {
            host
        };
        let scheme = if plain_http { "http" } else { "https" };
        let authorization = match &auth {
            RegistryAuth::Bearer(t) => Some(format!("Bearer {t}")),
            _ => None,
        };
        RepositoryClient {
            http,
            base: format!("{scheme}://{host}/v2/{repository}"),
            repository: repository.to_string(),
            auth,
            authorization: Mutex::new(authorization),
        }
    }

    /// The manifest (or index) named by a tag or digest, as bytes; `accept` lists the media
    /// types understood.
    pub async fn manifest(
        &self,
        reference: &str,
        accept: &[&str],
    ) -> Result<Bytes, DistributionError> {
        let url = format!("{}/manifests/{reference}", self.base);
        let resp = self.get(&url, Some(&accept.join(", "))).await?;
        read_limited(&url, resp, MAX_MANIFEST).await
    }

    /// A blob read whole, but at most `limit` bytes plus one: the caller compares the length
    /// with the descriptor, and a registry sending more is not read to the end.
    pub async fn blob_bytes(&self, digest: &str, limit: u64) -> Result<Vec<u8>, DistributionError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None).await?;
        let mut out = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|source| DistributionError::Request {
                url: url.clone(),
                source,
            })?;
            out.extend_from_slice(&chunk);
            if out.len() as u64 > limit {
                out.truncate(limit.saturating_add(1) as usize);
                break;
            }
        }
        Ok(out)
    }

    /// A blob as a stream (redirects to storage are followed; credentials are not sent to
    /// another host).
    pub async fn blob_stream(&self, digest: &str) -> Result<BlobStream, DistributionError> {
        let url = format!("{}/blobs/{digest}", self.base);
        let resp = self.get(&url, None).await?;
        Ok(resp
            .bytes_stream()
            .map(move |r| {
                r.map_err(|source| DistributionError::Request {
                    url: url.clone(),
                    source,
                })
            })
            .boxed())
    }

    /// `GET url`, answering one `401` challenge by authorizing and asking again.
    async fn get(
        &self,
        url: &str,
        accept: Option<&str>,
    ) -> Result<reqwest::Response, DistributionError> {
        let mut challenged = false;
        loop {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            if let Some(h) = self.current_authorization() {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req
                .send()
                .await
                .map_err(|source| DistributionError::Request {
                    url: url.to_string(),
                    source,
                })?;
            if resp.status() == StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                if let Some(c) = challenge {
                    if let Some(h) = self.authorize(&c).await? {
                        self.set_authorization(h);
                        continue;
                    }
                }
            }
            if !resp.status().is_success() {
                return Err(status_error(url, resp).await);
            }
            return Ok(resp);
        }
    }

    /// The `Authorization` answering `c`, or None when the credentials cannot answer it
    /// (then the `401` stands).
    async fn authorize(&self, c: &Challenge) -> Result<Option<String>, DistributionError> {
        match (c, &self.auth) {
            (Challenge::Basic, RegistryAuth::Basic(u, p)) => Ok(Some(basic(u, p))),
            (Challenge::Basic, _) | (_, RegistryAuth::Bearer(_)) => Ok(None),
            (
                Challenge::Bearer {
                    realm,
                    service,
                    scope,
                },
                auth,
            ) => {
                let scope = scope
                    .clone()
                    .unwrap_or_else(|| format!("repository:{}:pull", self.repository));
                let mut query = vec![("scope", scope.as_str())];
                if let Some(s) = service {
                    query.push(("service", s.as_str()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let RegistryAuth::Basic(u, p) = auth {
                    req = req.header(AUTHORIZATION, basic(u, p));
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|source| DistributionError::Request {
                        url: realm.clone(),
                        source,
                    })?;
                let status = resp.status();
                let body = read_limited(realm, resp, 1 << 20).await?;
                if !status.is_success() {
                    return Err(DistributionError::Auth {
                        url: realm.clone(),
                        message: format!("HTTP {status}: {}", envelope_or_text(&body).1),
                    });
                }
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    #[serde(default)]
                    token: String,
                    #[serde(default)]
                    access_token: String,
                }
                let t: TokenResponse =
                    serde_json::from_slice(&body).map_err(|e| DistributionError::Auth {
                        url: realm.clone(),
                        message: format!("token response is not JSON: {e}"),
                    })?;
                let token = if t.token.is_empty() {
                    t.access_token
                } else {
                    t.token
                };
                if token.is_empty() {
                    return Err(DistributionError::Auth {
                        url: realm.clone(),
                        message: "token response has no token".into(),
                    });
                }
                Ok(Some(format!("Bearer {token}")))
            }
        }
    }

    fn current_authorization(&self) -> Option<String> {
        self.authorization
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_authorization(&self, h: String) {
        *self.authorization.lock().unwrap_or_else(|p| p.into_inner()) = Some(h);
    }
}

fn basic(user: &str, password: &str) -> String {
    let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {b}")
}

/// Reads a body, failing once it passes `limit` bytes.
async fn read_limited(
    url: &str,
    resp: reqwest::Response,
    limit: u64,
) -> Result<Bytes, DistributionError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(DistributionError::TooLarge {
            url: url.to_string(),
            limit,
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| DistributionError::Request {
            url: url.to_string(),
            source,
        })?;
        if (out.len() + chunk.len()) as u64 > limit {
            return Err(DistributionError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// An error status with the registry's error envelope, if it sent one.
async fn status_error(url: &str, resp: reqwest::Response) -> DistributionError {
    let status = resp.status();
    let body = read_limited(url, resp, 64 << 10).await.unwrap_or_default();
    let (codes, mut message) = envelope_or_text(&body);
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or("").to_string();
    }
    DistributionError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        codes,
        message,
    }
}

/// `{"errors":[{"code":…,"message":…}]}` → (codes, "CODE: message; …"); else the body text.
fn envelope_or_text(body: &[u8]) -> (Vec<String>, String) {
    #[derive(serde::Deserialize)]
    struct Envelope {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(env) = serde_json::from_slice::<Envelope>(body) {
        let codes = env.errors.iter().map(|e| e.code.clone()).collect();
        let text = env
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        return (codes, text);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    let cut: String = text.chars().take(300).collect();
    (Vec::new(), cut)
}

/// A parsed `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

impl Challenge {
    /// `Basic realm="x"` or `Bearer realm="…",service="…",scope="…"` (quoted values may
    /// hold commas); None for other schemes or a bearer challenge without a realm.
    fn parse(header: &str) -> Option<Challenge> {
        let header = header.trim();
        let (scheme, params) = header.split_once(' ').unwrap_or((header, ""));
        if scheme.eq_ignore_ascii_case("basic") {
            return Some(Challenge::Basic);
        }
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let (mut realm, mut service, mut scope) = (None, None, None);
        for (k, v) in auth_params(params) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "service" => service = Some(v),
                "scope" => scope = Some(v),
                _ => {}
            }
        }
        Some(Challenge::Bearer {
            realm: realm?,
            service,
            scope,
        })
    }
}

/// `k="v", k2=v2` pairs.
fn auth_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if chars.next().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key.trim().to_string(), value.trim().to_string()));
    }
}

/// An error and its sources on one line (reqwest hides the cause, e.g. "connection refused"
/// or the TLS alert).
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
    fn challenges() {
        assert_eq!(
            Challenge::parse(r#"Basic realm="crius-test""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse(r#"bearer realm=https://a/t, service="s""#),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: Some("s".into()),
                scope: None,
            })
        );
        assert_eq!(Challenge::parse(r#"Bearer service="s""#), None);
        assert_eq!(Challenge::parse("Negotiate abc"), None);
    }

    #[test]
    fn envelopes() {
        let (codes, text) = envelope_or_text(
            br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{}}]}"#,
        );
        assert_eq!(codes, vec!["MANIFEST_UNKNOWN".to_string()]);
        assert_eq!(text, "MANIFEST_UNKNOWN: manifest unknown");
        let (codes, text) = envelope_or_text(b"  gateway broke \n");
        assert!(codes.is_empty());
        assert_eq!(text, "gateway broke");
    }

    /// A loopback HTTP/1.1 server answering each request with `answer(request head)`.
    async fn serve(
        answer: impl Fn(&str) -> String + Send + Sync + 'static,
    ) -> (String, tokio::task::JoinHandle<()>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let answer = std::sync::Arc::new(answer);
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_string();
                            buf.drain(..end + 4);
                            if s.write_all(answer(&head).as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, task)
    }

    fn response(status: &str, headers: &[(&str, String)], body: &str) -> String {
        let mut r = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r
    }

    /// The token dance: a 401 naming a realm, a token fetched there with the basic
    /// credentials, scope and service, then the request again with the token. Without
    /// credentials the realm refuses, and the error says so.
    #[tokio::test]
    async fn bearer_token_flow() {
        let realm = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let r2 = realm.clone();
        let (addr, task) = serve(move |head| {
            let first = head.lines().next().unwrap_or("");
            let authz = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("authorization: ")
                        .or(l.strip_prefix("Authorization: "))
                })
                .unwrap_or("");
            if first.starts_with("GET /token?") {
                if authz != basic("u", "p") {
                    return response("401 Unauthorized", &[], "bad credentials");
                }
                assert!(
                    first.contains("scope=repository%3Alib%2Fx%3Apull"),
                    "{first}"
                );
                assert!(first.contains("service=reg"), "{first}");
                return response("200 OK", &[], r#"{"access_token":"tok"}"#);
            }
            if authz == "Bearer tok" {
                return response("200 OK", &[], "{\"schemaVersion\":2}");
            }
            let realm = r2.lock().expect("realm").clone();
            response(
                "401 Unauthorized",
                &[(
                    "www-authenticate",
                    format!(
                        r#"Bearer realm="{realm}",service="reg",scope="repository:lib/x:pull""#
                    ),
                )],
                r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#,
            )
        })
        .await;
        *realm.lock().expect("realm") = format!("http://{addr}/token");
        let http = reqwest::Client::new();
        let c = RepositoryClient::new(
            http.clone(),
            &addr,
            true,
            "lib/x",
            RegistryAuth::Basic("u".into(), "p".into()),
        );
        let m = c
            .manifest("v1", &["a/b"])
            .await
            .expect("manifest with a token");
        assert_eq!(&m[..], b"{\"schemaVersion\":2}");
        assert_eq!(c.current_authorization().as_deref(), Some("Bearer tok"));

        let anon = RepositoryClient::new(http, &addr, true, "lib/x", RegistryAuth::Anonymous);
        let e = anon
            .manifest("v1", &["a/b"])
            .await
            .expect_err("realm refuses");
        assert!(
            matches!(&e, DistributionError::Auth { url, message } if url.ends_with("/token") && message.contains("bad credentials")),
            "{e:?}"
        );
        task.abort();
    }
}
