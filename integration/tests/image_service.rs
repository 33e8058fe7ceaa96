//! CRI ImageService end to end: a real crius daemon pulling from a real registry
//! (Debian's `docker-registry` on 127.0.0.1), with credentials, mirrors, bad input and a
//! daemon killed in the middle of a pull.

use std::path::Path;

use crius_integration::cri::{image_spec as spec, CriClient, Daemon};
use crius_integration::image_builder::{
    Compression, Image, ImageConfig, Layer, LayerBlob, LinkStyle,
};
use crius_integration::registry::{Registry, RegistryOptions};
use crius_proto::cri;

const PAUSE: &str = "crius.local/pause:builtin";

fn insecure(addr: &str) -> String {
    format!("\n[registry.hosts.\"{addr}\"]\ninsecure = true\n")
}

fn small_image() -> Image {
    Image::new(
        ImageConfig {
            user: Some("1000:1000".into()),
            ..Default::default()
        },
        vec![
            Layer::new()
                .busybox(LinkStyle::Symlink)
                .expect("busybox layer")
                .build(Compression::Gzip)
                .expect("gzip layer"),
            Layer::new()
                .file("etc/crius-test", "hello", 0o644)
                .build(Compression::None)
                .expect("tar layer"),
        ],
    )
}

async fn tags(c: &mut CriClient) -> Vec<String> {
    let mut v: Vec<String> = c
        .image
        .list_images(cri::ListImagesRequest::default())
        .await
        .expect("list")
        .into_inner()
        .images
        .into_iter()
        .flat_map(|i| i.repo_tags)
        .collect();
    v.sort();
    v
}

async fn fs_used(c: &mut CriClient) -> u64 {
    let r = c
        .image
        .image_fs_info(cri::ImageFsInfoRequest {})
        .await
        .expect("fs info")
        .into_inner();
    r.image_filesystems[0]
        .used_bytes
        .as_ref()
        .map(|u| u.value)
        .unwrap_or(0)
}

/// Files left by an interrupted pull: ingest files and unrecorded snapshot directories.
fn leftovers(root: &Path) -> Vec<String> {
    let mut v = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("content/ingest")) {
        v.extend(rd.flatten().map(|e| e.path().display().to_string()));
    }
    if let Ok(rd) = std::fs::read_dir(root.join("snapshots")) {
        v.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("tmp-"))
                .map(|e| e.path().display().to_string()),
        );
    }
    v
}

#[tokio::test]
async fn pull_list_status_remove_over_cri() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let image = small_image();
    let manifest_digest = reg
        .client()
        .push_image("test/small", "v1", &image)
        .await
        .expect("push");
    let config = image.config_blob().expect("config");
    let d = Daemon::start(&insecure(reg.addr())).expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let before = fs_used(&mut c).await;

    let name = format!("{}/test/small:v1", reg.addr());
    let id = c.pull(&name).await.expect("pull");
    assert_eq!(id, config.digest, "image_ref is the config digest");

    let img = c
        .image_status(&name)
        .await
        .expect("image status")
        .expect("status by tag");
    assert_eq!(img.id, id);
    assert_eq!(img.repo_tags, vec![name.clone()]);
    let by_digest = format!("{}/test/small@{manifest_digest}", reg.addr());
    assert_eq!(img.repo_digests, vec![by_digest.clone()]);
    assert_eq!(img.uid.map(|u| u.value), Some(1000), "USER 1000:1000");
    assert_eq!(img.username, "");
    let layer_sizes: u64 = image.layers.iter().map(|l| l.blob.bytes.len() as u64).sum();
    assert_eq!(img.size, config.bytes.len() as u64 + layer_sizes);
    assert!(!img.pinned);
    for alias in [
        by_digest.as_str(),
        id.as_str(),
        &id["sha256:".len().."sha256:".len() + 12],
    ] {
        let found = c.image_status(alias).await.expect("image status");
        assert_eq!(found.map(|i| i.id), Some(id.clone()), "lookup by {alias}");
    }
    let verbose = c
        .image
        .image_status(cri::ImageStatusRequest {
            image: spec(&name),
            verbose: true,
        })
        .await
        .expect("verbose")
        .into_inner();
    let info: serde_json::Value =
        serde_json::from_str(&verbose.info["info"]).expect("verbose info is JSON");
    assert_eq!(info["imageSpec"]["config"]["User"], "1000:1000");
    assert_eq!(
        info["imageSpec"]["rootfs"]["diff_ids"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    let listed = c
        .image
        .list_images(cri::ListImagesRequest {
            filter: Some(cri::ImageFilter { image: spec(&name) }),
        })
        .await
        .expect("filtered list")
        .into_inner()
        .images;
    assert_eq!(listed.len(), 1);
    assert_eq!(tags(&mut c).await, {
        let mut v = vec![name.clone(), PAUSE.to_string()];
        v.sort();
        v
    });
    let after_pull = fs_used(&mut c).await;
    assert!(after_pull > before, "{after_pull} > {before}");

    // Remove by tag: the image, its blobs and snapshots go; ImageFsInfo falls back.
    c.image
        .remove_image(cri::RemoveImageRequest { image: spec(&name) })
        .await
        .expect("remove");
    assert!(c.image_status(&id).await.expect("image status").is_none());
    assert_eq!(tags(&mut c).await, vec![PAUSE.to_string()]);
    assert_eq!(fs_used(&mut c).await, before);
    let blob = d
        .dir()
        .join("root/content/sha256")
        .join(&config.digest["sha256:".len()..]);
    assert!(!blob.exists(), "config blob collected");
    // Idempotent.
    c.image
        .remove_image(cri::RemoveImageRequest { image: spec(&name) })
        .await
        .expect("remove again");
}

#[tokio::test]
async fn credentials_right_wrong_and_missing() {
    let reg = Registry::start(RegistryOptions {
        htpasswd: Some(("alice".into(), "s3cret".into())),
    })
    .expect("registry");
    reg.client()
        .push_image("private/img", "v1", &small_image())
        .await
        .expect("push");
    let d = Daemon::start(&insecure(reg.addr())).expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let name = format!("{}/private/img:v1", reg.addr());
    let with = |user: &str, pass: &str| cri::PullImageRequest {
        image: spec(&name),
        auth: Some(cri::AuthConfig {
            username: user.into(),
            password: pass.into(),
            ..Default::default()
        }),
        ..Default::default()
    };

    let e = c.pull(&name).await.expect_err("no credentials");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains(reg.addr()) && e.message().contains(&name),
        "{e:?}"
    );
    let e = c
        .image
        .pull_image(with("alice", "wrong"))
        .await
        .expect_err("wrong password");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // The wrong password must not stick: the right one works right after.
    c.image
        .pull_image(with("alice", "s3cret"))
        .await
        .expect("right password");
    c.image
        .remove_image(cri::RemoveImageRequest { image: spec(&name) })
        .await
        .expect("remove");
    // base64 `auth`, as the kubelet sends from a docker config.
    c.image
        .pull_image(cri::PullImageRequest {
            image: spec(&name),
            auth: Some(cri::AuthConfig {
                auth: "YWxpY2U6czNjcmV0".into(), // alice:s3cret
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("base64 auth");
}

#[tokio::test]
async fn a_mirror_that_is_down_falls_back_to_the_origin() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    reg.client()
        .push_image("test/m", "v1", &small_image())
        .await
        .expect("push");
    let down = Registry::down_addr().expect("free port");
    let extra = format!(
        "\n[registry.hosts.\"{addr}\"]\ninsecure = true\nmirrors = [\"http://{down}\"]\n",
        addr = reg.addr()
    );
    let d = Daemon::start(&extra).expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    c.pull(&format!("{}/test/m:v1", reg.addr()))
        .await
        .expect("pull through the origin");
    let log = d.log();
    assert!(
        log.contains("mirror failed") && log.contains(&down),
        "the mirror was tried first: {log}"
    );
}

#[tokio::test]
async fn bad_input_gets_clear_statuses_and_leaves_nothing() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let good = small_image();
    reg.client()
        .push_image("test/good", "v1", &good)
        .await
        .expect("push");
    let tar = Layer::new().file("etc/x", "x", 0o644).tar().expect("tar");
    let broken = Image::new(
        ImageConfig::default(),
        vec![LayerBlob::broken_gzip(&tar).expect("broken gzip")],
    );
    reg.client()
        .push_image("test/broken", "v1", &broken)
        .await
        .expect("push broken");
    let mut odd = LayerBlob::from_tar(&tar, Compression::None).expect("layer");
    odd.media_type = Some("application/x-not-a-layer".into());
    reg.client()
        .push_image(
            "test/odd",
            "v1",
            &Image::new(ImageConfig::default(), vec![odd]),
        )
        .await
        .expect("push odd");
    let down = Registry::down_addr().expect("free port");
    let d = Daemon::start(&format!("{}{}", insecure(reg.addr()), insecure(&down))).expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");

    // CRI contract: an absent image is an empty status, and removing it succeeds.
    assert!(c
        .image_status("docker.io/library/absent:1")
        .await
        .expect("image status")
        .is_none());
    c.image
        .remove_image(cri::RemoveImageRequest {
            image: spec("absent:1"),
        })
        .await
        .expect("idempotent remove");

    let cases: Vec<(String, tonic::Code, Vec<String>)> = vec![
        (
            "".into(),
            tonic::Code::InvalidArgument,
            vec!["image.image".into()],
        ),
        (
            "Not/A:Valid:Ref".into(),
            tonic::Code::InvalidArgument,
            vec!["Not/A:Valid:Ref".into()],
        ),
        (
            format!("{down}/test/good:v1"),
            tonic::Code::Unavailable,
            vec![down.clone(), format!("{down}/test/good:v1")],
        ),
        (
            format!("{}/test/good:nope", reg.addr()),
            tonic::Code::NotFound,
            vec![reg.addr().to_string(), "test/good:nope".into()],
        ),
        (
            format!("{}/test/odd:v1", reg.addr()),
            tonic::Code::FailedPrecondition,
            vec!["application/x-not-a-layer".into()],
        ),
        (
            format!("{}/test/broken:v1", reg.addr()),
            tonic::Code::FailedPrecondition,
            vec!["gzip".into(), broken.layers[0].digest().to_string()],
        ),
    ];
    for (image, code, words) in cases {
        let e = c.pull(&image).await.expect_err(&image);
        assert_eq!(e.code(), code, "{image}: {e:?}");
        for w in words {
            assert!(
                e.message().contains(&w),
                "{image}: {:?} lacks {w:?}",
                e.message()
            );
        }
    }
    // Malformed credentials name the field.
    let e = c
        .image
        .pull_image(cri::PullImageRequest {
            image: spec(&format!("{}/test/good:v1", reg.addr())),
            auth: Some(cri::AuthConfig {
                auth: "!!!".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("bad base64 auth");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("auth.auth"), "{e:?}");
    assert_eq!(tags(&mut c).await, vec![PAUSE.to_string()]);
    assert_eq!(leftovers(&d.dir().join("root")), Vec::<String>::new());
}

#[tokio::test]
async fn a_daemon_killed_mid_pull_leaves_nothing_and_the_next_pull_completes() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let big = crius_integration::image_builder::big_image(6, 60 << 20).expect("big image");
    reg.client()
        .push_image("test/big", "v1", &big)
        .await
        .expect("push");
    let mut d = Daemon::start(&insecure(reg.addr())).expect("daemon");
    let name = format!("{}/test/big:v1", reg.addr());
    let socket = d.socket.clone();
    let n2 = name.clone();
    let pulling = tokio::spawn(async move {
        let mut c = CriClient::connect(&socket).await.expect("connect");
        c.pull(&n2).await
    });
    // Kill once layers are arriving (an ingest file or a snapshot being unpacked exists).
    let root = d.dir().join("root");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while leftovers(&root).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(
        !leftovers(&root).is_empty(),
        "the pull never started writing"
    );
    d.kill9();
    assert!(
        pulling.await.expect("join").is_err(),
        "the pull was cut off"
    );

    d.restart().expect("restart");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    assert_eq!(tags(&mut c).await, vec![PAUSE.to_string()], "no half image");
    assert_eq!(
        leftovers(&root),
        Vec::<String>::new(),
        "start-up cleaned up"
    );
    let id = c.pull(&name).await.expect("second pull");
    assert_eq!(
        c.image_status(&name)
            .await
            .expect("image status")
            .map(|i| i.id),
        Some(id)
    );
}

#[tokio::test]
async fn a_cancelled_pull_rpc_leaves_no_image() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let big = crius_integration::image_builder::big_image(4, 40 << 20).expect("big image");
    reg.client()
        .push_image("test/big", "v1", &big)
        .await
        .expect("push");
    let d = Daemon::start(&insecure(reg.addr())).expect("daemon");
    let mut c = CriClient::connect(&d.socket).await.expect("connect");
    let name = format!("{}/test/big:v1", reg.addr());
    let mut req = tonic::Request::new(cri::PullImageRequest {
        image: spec(&name),
        ..Default::default()
    });
    req.set_timeout(std::time::Duration::from_millis(100));
    let e = c.image.pull_image(req).await.expect_err("deadline");
    assert!(
        matches!(
            e.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{e:?}"
    );
    let root = d.dir().join("root");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !leftovers(&root).is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        leftovers(&root),
        Vec::<String>::new(),
        "cancelled work cleaned up"
    );
    assert_eq!(tags(&mut c).await, vec![PAUSE.to_string()]);
    c.pull(&name).await.expect("the retry completes");
}
