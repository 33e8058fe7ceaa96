//! Pulling from a registry that requires TLS client certificates (mutual TLS): a real
//! `docker-registry` serving HTTPS with `http.tls.clientcas`, certificates made by `openssl`
//! at test time, and crius configured per host with `ca_files`, `client_cert` and
//! `client_key` in `crius.toml`, pulled from over CRI.
//!
//! Needs `docker-registry`, `openssl` and `busybox-static` (for the daemon's image builder
//! only through the shared helpers; the image here is a plain file layer).

use std::path::Path;

use crius::image::registry::{HostConfig, RegistryConfig};
use crius::image::{ImageError, ImageService};
use crius::store::Store;
use crius_integration::cri::{CriClient, Daemon};
use crius_integration::image_builder::{Compression, Image, ImageConfig, Layer};
use crius_integration::registry::{Registry, RegistryOptions, RegistryTls, TestPki};

/// A plain registry the image is pushed to, and a TLS registry requiring client
/// certificates that serves the same storage.
struct Fixture {
    /// Kept running only so its temp dir (the shared storage) lives.
    _plain: Registry,
    tls: Registry,
    pki: TestPki,
    /// A second, unrelated PKI: its CA must not be trusted for `tls`.
    other: TestPki,
    config_digest: String,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::Builder::new()
            .prefix("crius-registry-tls-")
            .tempdir_in(crius_integration::host::scratch_dir())
            .expect("temp dir");
        let pki = TestPki::generate(dir.path(), "good").expect("pki");
        let other = TestPki::generate(dir.path(), "other").expect("other pki");
        let plain = Registry::start(RegistryOptions::default()).expect("plain registry");
        let image = Image::new(
            ImageConfig::default(),
            vec![Layer::new()
                .file("etc/mtls", "over mutual TLS", 0o644)
                .build(Compression::Gzip)
                .expect("layer")],
        );
        plain
            .client()
            .push_image("test/mtls", "v1", &image)
            .await
            .expect("push");
        let tls = Registry::start_tls(
            RegistryTls {
                certificate: pki.server_cert.clone(),
                key: pki.server_key.clone(),
                client_cas: vec![pki.ca.clone()],
            },
            Some(plain.storage_dir()),
        )
        .expect("tls registry");
        Fixture {
            _plain: plain,
            tls,
            pki,
            other,
            config_digest: image.config_blob().expect("config").digest,
            _dir: dir,
        }
    }

    fn reference(&self) -> String {
        format!("{}/test/mtls:v1", self.tls.host())
    }

    /// `[registry.hosts."<tls registry>"]` with `ca_files = [ca]` and, if given, the
    /// client pair.
    fn host_toml(&self, ca: &Path, client: Option<(&Path, &Path)>) -> String {
        let mut s = format!(
            "\n[registry.hosts.\"{}\"]\nca_files = [\"{}\"]\n",
            self.tls.host(),
            ca.display()
        );
        if let Some((cert, key)) = client {
            s.push_str(&format!(
                "client_cert = \"{}\"\nclient_key = \"{}\"\n",
                cert.display(),
                key.display()
            ));
        }
        s
    }
}

async fn connect(d: &Daemon) -> CriClient {
    CriClient::connect(&d.socket)
        .await
        .unwrap_or_else(|e| panic!("connect: {e:#}\ncrius log:\n{}", d.log()))
}

#[tokio::test]
async fn pull_presents_the_client_certificate() {
    let f = Fixture::new().await;
    let d = Daemon::start(&f.host_toml(&f.pki.ca, Some((&f.pki.client_cert, &f.pki.client_key))))
        .expect("daemon");
    let mut c = connect(&d).await;
    let id = c
        .pull(&f.reference())
        .await
        .unwrap_or_else(|e| panic!("pull over mTLS: {e}\nregistry log:\n{}", f.tls.log()));
    assert_eq!(id, f.config_digest, "image_ref is the config digest");
    let img = c
        .image_status(&f.reference())
        .await
        .expect("status")
        .expect("image is listed");
    assert_eq!(img.id, f.config_digest);
}

#[tokio::test]
async fn pull_without_a_client_certificate_is_refused() {
    let f = Fixture::new().await;
    let d = Daemon::start(&f.host_toml(&f.pki.ca, None)).expect("daemon");
    let mut c = connect(&d).await;
    let e = c
        .pull(&f.reference())
        .await
        .expect_err("the registry requires a client certificate");
    assert!(
        matches!(
            e.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unavailable
        ),
        "code: {e:?}"
    );
    assert!(e.message().contains(f.tls.host()), "names the host: {e:?}");
    assert!(
        e.message().contains("client certificate"),
        "says the client certificate was refused: {e:?}"
    );
    assert!(
        c.image_status(&f.reference())
            .await
            .expect("status")
            .is_none(),
        "nothing recorded"
    );

    // A client certificate from a CA the registry does not trust is refused the same way.
    let d2 =
        Daemon::start(&f.host_toml(&f.pki.ca, Some((&f.other.client_cert, &f.other.client_key))))
            .expect("daemon");
    let mut c2 = connect(&d2).await;
    let e = c2
        .pull(&f.reference())
        .await
        .expect_err("an untrusted client certificate");
    assert!(
        matches!(
            e.code(),
            tonic::Code::PermissionDenied | tonic::Code::Unavailable
        ),
        "code: {e:?}"
    );
    assert!(e.message().contains(f.tls.host()), "names the host: {e:?}");
}

#[tokio::test]
async fn pull_with_the_wrong_ca_names_the_certificate() {
    let f = Fixture::new().await;
    let d = Daemon::start(&f.host_toml(&f.other.ca, Some((&f.pki.client_cert, &f.pki.client_key))))
        .expect("daemon");
    let mut c = connect(&d).await;
    let e = c
        .pull(&f.reference())
        .await
        .expect_err("the server certificate is not signed by a trusted CA");
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains(f.tls.host()), "names the host: {e:?}");
    assert!(
        e.message().contains("certificate"),
        "names the certificate problem: {e:?}"
    );
}

/// A client certificate that cannot be read, or a key file that holds no key, fails the pull
/// with an error naming the file; half a pair is rejected when the config is read.
#[tokio::test]
async fn unusable_client_certificate_files_are_named() {
    let f = Fixture::new().await;
    let tmp = tempfile::Builder::new()
        .prefix("crius-registry-tls-svc-")
        .tempdir_in(crius_integration::host::scratch_dir())
        .expect("temp dir");
    let missing = tmp.path().join("missing-cert.pem");
    for (n, (cert, key, named)) in [
        (&missing, &f.pki.client_key, &missing),
        // A certificate where the key should be.
        (&f.pki.client_cert, &f.pki.client_cert, &f.pki.client_cert),
    ]
    .into_iter()
    .enumerate()
    {
        let root = tmp.path().join(format!("root{n}"));
        std::fs::create_dir_all(&root).expect("root");
        let store = Store::open(&root.join("crius.redb")).expect("store");
        let mut reg = RegistryConfig::default();
        reg.hosts.insert(
            f.tls.host().to_string(),
            HostConfig {
                ca_files: vec![f.pki.ca.clone()],
                client_cert: Some(cert.clone()),
                client_key: Some(key.clone()),
                ..Default::default()
            },
        );
        let images = ImageService::open(&root, store, reg)
            .await
            .expect("the files are read at pull time");
        let e = images
            .pull(&f.reference(), None, None)
            .await
            .expect_err("unusable client certificate");
        assert!(matches!(e, ImageError::Registry { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&named.display().to_string()) && msg.contains(f.tls.host()),
            "names the file and host: {msg}"
        );
    }

    // Half a pair in crius.toml: the daemon refuses the config, naming both keys.
    let text = format!(
        "[registry.hosts.\"{}\"]\nclient_cert = \"{}\"\n",
        f.tls.host(),
        f.pki.client_cert.display()
    );
    let e = crius::config::Config::parse(&text, "test.toml").expect_err("half a pair");
    let msg = e.to_string();
    assert!(
        msg.contains("client_cert") && msg.contains("client_key"),
        "names the keys: {msg}"
    );
}
