//! Tests of the registry test harness itself, against the real `docker-registry`: what the
//! image-pull tests rely on (pushes round-trip byte for byte, auth is enforced, indexes
//! keep their platforms, corrupted blobs are served under the digest they no longer match,
//! malicious layers contain exactly the entries asked for).

use std::io::Read;

use crius_integration::image_builder::{
    big_image, platform_index, push_image_corrupt_layer, sha256_digest, Attack, Compression,
    EntryKind, Image, ImageConfig, Layer, LayerBlob, LinkStyle, ManifestKind, Platform,
    RegistryClient, ATTACK_PAYLOAD,
};
use crius_integration::registry::{Registry, RegistryOptions};
use serde_json::Value;

fn busybox_image(compression: Compression) -> Image {
    let base = Layer::new()
        .busybox(LinkStyle::Symlink)
        .expect("busybox layer")
        .build(compression)
        .expect("build");
    let top = Layer::new()
        .dir_as("home/app", 0o750, 1000, 1000)
        .file_as("home/app/hello.txt", "hello\n", 0o640, 1000, 1000)
        .whiteout("etc/group")
        .opaque("tmp")
        .build(compression)
        .expect("build");
    let config = ImageConfig {
        entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
        cmd: Some(vec!["cat /home/app/hello.txt".into()]),
        user: Some("1000:1000".into()),
        working_dir: Some("/home/app".into()),
        stop_signal: Some("SIGINT".into()),
        labels: [("org.crius.test".to_string(), "yes".to_string())].into(),
        ..ImageConfig::default()
    };
    Image::new(config, vec![base, top])
}

fn json(body: &[u8]) -> Value {
    serde_json::from_slice(body).expect("json body")
}

/// Fetches `reference` from `repo`, checks the manifest digest, then every blob it names.
async fn check_round_trip(client: &RegistryClient, repo: &str, reference: &str, image: &Image) {
    let manifest = client.get_manifest(repo, reference).await.expect("get");
    assert_eq!(
        manifest.status,
        200,
        "{}",
        String::from_utf8_lossy(&manifest.body)
    );
    assert_eq!(manifest.header("content-type"), Some(image.media_type()));
    let expected = image.manifest_blob().expect("manifest");
    assert_eq!(manifest.body, expected.bytes, "manifest bytes round-trip");
    assert_eq!(
        manifest.header("docker-content-digest"),
        Some(expected.digest.as_str())
    );

    let m = json(&manifest.body);
    let config_digest = m["config"]["digest"].as_str().expect("config digest");
    let config = client.get_blob(repo, config_digest).await.expect("config");
    assert_eq!(config.status, 200);
    assert_eq!(config.body_digest(), config_digest);
    let cfg = json(&config.body);
    let diff_ids = cfg["rootfs"]["diff_ids"].as_array().expect("diff_ids");
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), image.layers.len());
    assert_eq!(diff_ids.len(), image.layers.len());
    for ((desc, diff_id), layer) in layers.iter().zip(diff_ids).zip(&image.layers) {
        let digest = desc["digest"].as_str().expect("digest");
        let blob = client.get_blob(repo, digest).await.expect("blob");
        assert_eq!(blob.status, 200);
        assert_eq!(blob.body_digest(), digest, "blob matches its digest");
        assert_eq!(desc["size"].as_u64(), Some(blob.body.len() as u64));
        assert_eq!(
            desc["mediaType"].as_str(),
            Some(layer.compression.layer_media_type(image.kind))
        );
        let raw = match layer.compression {
            Compression::None => blob.body.clone(),
            Compression::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(blob.body.as_slice())
                    .read_to_end(&mut out)
                    .expect("gunzip");
                out
            }
            Compression::Zstd => zstd::decode_all(blob.body.as_slice()).expect("unzstd"),
        };
        assert_eq!(
            Some(sha256_digest(&raw).as_str()),
            diff_id.as_str(),
            "diff_id"
        );
    }
}

#[tokio::test]
async fn push_and_fetch_back_every_compression_and_manifest_kind() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let client = reg.client();
    let v2 = client.get("/v2/").await.expect("GET /v2/");
    assert_eq!(v2.status, 200);
    for kind in [ManifestKind::Oci, ManifestKind::Docker] {
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut image = busybox_image(compression);
            image.kind = kind;
            let tag = format!("{kind:?}-{compression:?}").to_lowercase();
            let digest = client
                .push_image("library/busybox", &tag, &image)
                .await
                .expect("push");
            assert_eq!(digest, image.manifest_blob().expect("manifest").digest);
            check_round_trip(&client, "library/busybox", &tag, &image).await;
            check_round_trip(&client, "library/busybox", &digest, &image).await;
        }
    }
    let cfg = json(
        &client
            .get_blob(
                "library/busybox",
                &busybox_image(Compression::Gzip)
                    .config_blob()
                    .expect("config")
                    .digest,
            )
            .await
            .expect("config")
            .body,
    );
    assert_eq!(cfg["config"]["User"], "1000:1000");
    assert_eq!(cfg["config"]["WorkingDir"], "/home/app");
    assert_eq!(cfg["config"]["StopSignal"], "SIGINT");
    assert_eq!(cfg["config"]["Entrypoint"][0], "/bin/sh");
    assert_eq!(cfg["config"]["Labels"]["org.crius.test"], "yes");
    assert_eq!(cfg["os"], "linux");
    assert_eq!(cfg["history"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn htpasswd_registry_requires_credentials() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
    })
    .expect("registry");
    assert_eq!(reg.credentials(), Some(("alice", "s3cret")));
    let anonymous = RegistryClient::new(reg.host());
    let resp = anonymous.get("/v2/").await.expect("GET /v2/");
    assert_eq!(resp.status, 401);
    let challenge = resp.header("www-authenticate").expect("challenge");
    assert!(challenge.starts_with("Basic"), "{challenge}");
    let wrong = RegistryClient::new(reg.host()).with_basic_auth("alice", "wrong");
    assert_eq!(wrong.get("/v2/").await.expect("GET").status, 401);

    let client = reg.client();
    assert_eq!(client.get("/v2/").await.expect("GET").status, 200);
    let image = busybox_image(Compression::Gzip);
    let digest = client
        .push_image("private/app", "v1", &image)
        .await
        .expect("push with credentials");
    check_round_trip(&client, "private/app", "v1", &image).await;
    let denied = anonymous
        .get_manifest("private/app", &digest)
        .await
        .expect("GET");
    assert_eq!(denied.status, 401);
    assert!(anonymous
        .push_image("private/other", "v1", &image)
        .await
        .is_err());
}

#[tokio::test]
async fn multi_platform_index_round_trips() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let client = reg.client();
    for kind in [ManifestKind::Oci, ManifestKind::Docker] {
        let index = platform_index(kind, Compression::Gzip).expect("index");
        let tag = format!("{kind:?}").to_lowercase();
        let digest = client
            .push_index("multi/arch", &tag, &index)
            .await
            .expect("push index");
        let resp = client.get_manifest("multi/arch", &tag).await.expect("get");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("content-type"), Some(index.media_type()));
        assert_eq!(resp.body_digest(), digest);
        let v = json(&resp.body);
        let entries = v["manifests"].as_array().expect("manifests");
        let platforms: Vec<String> = entries
            .iter()
            .map(|e| {
                let p = &e["platform"];
                let mut s = format!(
                    "{}/{}",
                    p["os"].as_str().expect("os"),
                    p["architecture"].as_str().expect("arch")
                );
                if let Some(v) = p["variant"].as_str() {
                    s = format!("{s}/{v}");
                }
                s
            })
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8", "linux/arm/v7"]);
        let mut seen = std::collections::HashSet::new();
        for (entry, image) in entries.iter().zip(&index.images) {
            let d = entry["digest"].as_str().expect("digest");
            assert!(
                seen.insert(d.to_string()),
                "each platform has its own manifest"
            );
            check_round_trip(&client, "multi/arch", d, image).await;
            // The layer says which platform it belongs to.
            let layer = client
                .get_blob("multi/arch", image.layers[0].digest())
                .await
                .expect("layer");
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(layer.body.as_slice())
                .read_to_end(&mut tar)
                .expect("gunzip");
            let mut archive = tar::Archive::new(tar.as_slice());
            let mut found = None;
            for e in archive.entries().expect("entries") {
                let mut e = e.expect("entry");
                if e.path().expect("path").to_str() == Some("etc/platform") {
                    let mut s = String::new();
                    e.read_to_string(&mut s).expect("read");
                    found = Some(s);
                }
            }
            assert_eq!(
                found.as_deref().map(str::trim),
                Some(image.config.platform.to_string().as_str())
            );
        }
        assert!(index
            .images
            .iter()
            .any(|i| i.config.platform == Platform::host()));
    }
}

#[tokio::test]
async fn corrupted_blob_is_served_under_its_old_digest() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let client = reg.client();
    for compression in [Compression::Gzip, Compression::None, Compression::Zstd] {
        let image = busybox_image(compression);
        let repo = format!("corrupt/{compression:?}").to_lowercase();
        push_image_corrupt_layer(&reg, &repo, "v1", &image, 0)
            .await
            .expect("push + corrupt");
        let want = image.layers[0].digest();
        let resp = client.get_blob(&repo, want).await.expect("get");
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("docker-content-digest"), Some(want));
        assert_eq!(
            resp.body.len(),
            image.layers[0].blob.bytes.len(),
            "same size"
        );
        assert_ne!(resp.body_digest(), want, "served bytes no longer match");
        if compression == Compression::Gzip {
            // Still a valid gzip stream of the same tar: only a digest check catches it.
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(resp.body.as_slice())
                .read_to_end(&mut tar)
                .expect("still decompresses");
            assert_eq!(sha256_digest(&tar), image.layers[0].diff_id);
        }
        // The manifest itself is untouched.
        let m = client.get_manifest(&repo, "v1").await.expect("manifest");
        assert_eq!(m.body_digest(), image.manifest_blob().expect("m").digest);
    }
}

#[tokio::test]
async fn wrong_descriptor_size_and_broken_gzip_are_accepted_by_the_registry() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let client = reg.client();
    let tar = Layer::new()
        .busybox(LinkStyle::Hardlink)
        .expect("busybox")
        .tar()
        .expect("tar");

    let mut layer = LayerBlob::from_tar(&tar, Compression::Gzip).expect("layer");
    let real = layer.blob.bytes.len() as u64;
    layer.descriptor_size = Some(real + 1000);
    let image = Image::new(ImageConfig::default(), vec![layer]);
    client
        .push_image("broken/size", "v1", &image)
        .await
        .expect("registry accepts a wrong size");
    let m = json(
        &client
            .get_manifest("broken/size", "v1")
            .await
            .expect("m")
            .body,
    );
    assert_eq!(m["layers"][0]["size"].as_u64(), Some(real + 1000));
    let blob = client
        .get_blob("broken/size", image.layers[0].digest())
        .await
        .expect("blob");
    assert_eq!(blob.body.len() as u64, real);

    let broken = LayerBlob::broken_gzip(&tar).expect("broken");
    let image = Image::new(ImageConfig::default(), vec![broken.clone()]).docker();
    client
        .push_image("broken/gzip", "v1", &image)
        .await
        .expect("push");
    let blob = client
        .get_blob("broken/gzip", broken.digest())
        .await
        .expect("blob");
    assert_eq!(blob.body_digest(), broken.digest(), "digest is right");
    let mut out = Vec::new();
    assert!(flate2::read::GzDecoder::new(blob.body.as_slice())
        .read_to_end(&mut out)
        .is_err());
}

#[tokio::test]
async fn stopped_registry_refuses_and_down_addr_refuses() {
    let mut reg = Registry::start(RegistryOptions::default()).expect("registry");
    let client = reg.client();
    let image = busybox_image(Compression::Gzip);
    client.push_image("app", "v1", &image).await.expect("push");
    reg.stop();
    assert!(!reg.is_running());
    assert!(client.get("/v2/").await.is_err());
    reg.restart().expect("restart");
    check_round_trip(&reg.client(), "app", "v1", &image).await;

    let down = Registry::down_addr().expect("down addr");
    assert!(down.starts_with("127.0.0.1:"));
    let err = std::net::TcpStream::connect(&down).expect_err("nothing listens");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(RegistryClient::new(&down).get("/v2/").await.is_err());
}

#[test]
fn malicious_layers_hold_exactly_the_raw_entries() {
    let target = std::path::Path::new("/tmp/crius-escape/pwned");
    let tar_of = |attack| {
        let tar = Layer::new().attack(attack, target).tar().expect("tar");
        let mut archive = tar::Archive::new(std::io::Cursor::new(tar));
        archive
            .entries()
            .expect("entries")
            .map(|e| {
                let e = e.expect("entry");
                let h = e.header();
                (
                    String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                    h.entry_type(),
                    e.link_name_bytes()
                        .map(|l| String::from_utf8_lossy(&l).into_owned()),
                    h.mode().expect("mode"),
                )
            })
            .collect::<Vec<_>>()
    };
    let climb = "../".repeat(16);

    let e = tar_of(Attack::DotDot);
    assert_eq!(e[0].0, format!("{climb}tmp/crius-escape/pwned"));
    let e = tar_of(Attack::Absolute);
    assert_eq!(e[0].0, "/tmp/crius-escape/pwned");
    let e = tar_of(Attack::SymlinkEscape);
    assert_eq!(e[0].1, tar::EntryType::Symlink);
    assert_eq!(e[0].2.as_deref(), Some("/tmp/crius-escape"));
    assert_eq!(e[1].0, "evil/pwned");
    let e = tar_of(Attack::HardlinkEscape);
    assert_eq!(e[0].1, tar::EntryType::Link);
    assert_eq!(
        e[0].2.as_deref(),
        Some(format!("{climb}tmp/crius-escape/pwned").as_str())
    );
    assert_eq!(
        (e[1].0.as_str(), e[1].1),
        ("evil-hardlink", tar::EntryType::Regular)
    );
    let e = tar_of(Attack::CharDevice);
    assert_eq!((e[1].1, e[1].3), (tar::EntryType::Char, 0o666));
    let e = tar_of(Attack::SetuidWorldWritable);
    assert_eq!((e[1].0.as_str(), e[1].3), ("bin/evil-suid", 0o6777));

    // Long names and link targets survive (GNU long-name records).
    let long = format!("{}/file", "d".repeat(150));
    let layer = Layer::new()
        .file(&long, ATTACK_PAYLOAD, 0o644)
        .symlink("l", &long)
        .hardlink("h", &long);
    let tar = layer.tar().expect("tar");
    let mut archive = tar::Archive::new(tar.as_slice());
    let got: Vec<(String, Option<String>)> = archive
        .entries()
        .expect("entries")
        .map(|e| {
            let e = e.expect("entry");
            (
                e.path().expect("p").display().to_string(),
                e.link_name().expect("l").map(|l| l.display().to_string()),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (long.clone(), None),
            ("l".to_string(), Some(long.clone())),
            ("h".to_string(), Some(long.clone()))
        ]
    );
    assert!(matches!(layer.entries()[0].kind, EntryKind::File(_)));
}

#[test]
fn big_image_is_deterministic_and_about_the_size_asked() {
    let a = big_image(4, 8 << 20).expect("big");
    let b = big_image(4, 8 << 20).expect("big");
    assert_eq!(a.layers.len(), 4);
    assert_eq!(
        a.manifest_blob().expect("m").digest,
        b.manifest_blob().expect("m").digest
    );
    let compressed: usize = a.layers.iter().map(|l| l.blob.bytes.len()).sum();
    // 8 MiB of data, half noise, plus busybox (~1-2 MiB, compressing to about half).
    assert!(
        (4 << 20..7 << 20).contains(&compressed),
        "compressed size {compressed}"
    );
}

/// The pull benchmark's image (10 layers, 100 MiB), pushed for real.
#[tokio::test]
async fn big_image_pushes() {
    let t = std::time::Instant::now();
    let image = big_image(10, 100 << 20).expect("big");
    let built = t.elapsed();
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let t = std::time::Instant::now();
    reg.client()
        .push_image("bench/big", "v1", &image)
        .await
        .expect("push");
    let compressed: usize = image.layers.iter().map(|l| l.blob.bytes.len()).sum();
    eprintln!(
        "big image: {compressed} bytes compressed, built in {built:?}, pushed in {:?}",
        t.elapsed()
    );
}
