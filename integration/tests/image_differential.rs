//! The same ImageService scenarios against crius and containerd 1.6's CRI plugin, pulling
//! from one real registry. Where the two disagree the test says which one is right.

use crius_integration::containerd::{Containerd, ContainerdOptions};
use crius_integration::cri::{image_spec as spec, CriClient, Daemon};
use crius_integration::image_builder::{
    platform_index, Compression, Image, ImageConfig, Layer, LinkStyle, ManifestKind,
};
use crius_integration::registry::{Registry, RegistryOptions};
use crius_proto::cri;

/// What both runtimes must agree on, size aside (see below).
fn view(i: &cri::Image) -> (String, Vec<String>, Vec<String>, Option<i64>, String) {
    let mut tags = i.repo_tags.clone();
    tags.sort();
    let mut digests = i.repo_digests.clone();
    digests.sort();
    (
        i.id.clone(),
        tags,
        digests,
        i.uid.as_ref().map(|u| u.value),
        i.username.clone(),
    )
}

#[tokio::test]
async fn image_service_agrees_with_containerd() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let busybox = || {
        Layer::new()
            .busybox(LinkStyle::Symlink)
            .expect("busybox")
            .build(Compression::Gzip)
            .expect("layer")
    };
    let oci = Image::new(
        ImageConfig {
            user: Some("1000:1000".into()),
            ..Default::default()
        },
        vec![busybox()],
    );
    let docker = Image::new(
        ImageConfig {
            user: Some("nobody".into()),
            ..Default::default()
        },
        vec![
            busybox(),
            Layer::new()
                .file("etc/d", "d", 0o644)
                .build(Compression::Gzip)
                .expect("layer"),
        ],
    )
    .docker();
    let client = reg.client();
    client
        .push_image("diff/oci", "v1", &oci)
        .await
        .expect("push");
    client
        .push_image("diff/docker", "v1", &docker)
        .await
        .expect("push");
    client
        .push_index(
            "diff/multi",
            "v1",
            &platform_index(ManifestKind::Oci, Compression::Gzip).expect("index"),
        )
        .await
        .expect("push index");

    let addr = reg.addr().to_string();
    let ours =
        Daemon::start(&format!("\n[registry.hosts.\"{addr}\"]\ninsecure = true\n")).expect("crius");
    let theirs = Containerd::start(ContainerdOptions {
        cri: true,
        extra_config: format!(
            "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"{addr}\"]\n  endpoint = [\"http://{addr}\"]\n"
        ),
        ..Default::default()
    })
    .expect("containerd");
    let mut a = CriClient::connect(&ours.socket).await.expect("crius");
    let mut b = CriClient::connect(&theirs.socket)
        .await
        .expect("containerd");

    for repo in ["diff/oci", "diff/docker", "diff/multi"] {
        let name = format!("{addr}/{repo}:v1");
        let ida = a.pull(&name).await.expect("crius pull");
        let idb = b.pull(&name).await.expect("containerd pull");
        assert_eq!(ida, idb, "{name}: image_ref is the config digest in both");
        let sa = a
            .image_status(&name)
            .await
            .expect("image status")
            .expect("crius status");
        let sb = b
            .image_status(&name)
            .await
            .expect("image status")
            .expect("containerd status");
        assert_eq!(view(&sa), view(&sb), "{name}");
        // Size: both report the compressed content size; containerd also counts the
        // manifest (and index) it walked. Neither is wrong (the CRI only says "size of the
        // image in bytes"); crius counts config + layers, as `docker images` would not
        // double-count manifests. They must still be close.
        assert!(
            sa.size <= sb.size && sb.size - sa.size < 8192,
            "{name}: crius {} vs containerd {}",
            sa.size,
            sb.size
        );
        // Lookup by id and by repo digest work in both.
        for alias in [sa.id.clone(), sa.repo_digests[0].clone()] {
            assert_eq!(
                a.image_status(&alias)
                    .await
                    .expect("image status")
                    .map(|i| i.id),
                Some(sa.id.clone())
            );
            assert_eq!(
                b.image_status(&alias)
                    .await
                    .expect("image status")
                    .map(|i| i.id),
                Some(sb.id.clone())
            );
        }
    }

    // Absent images: empty status in both; removal succeeds in both.
    let absent = format!("{addr}/diff/absent:v1");
    assert!(a
        .image_status(&absent)
        .await
        .expect("image status")
        .is_none());
    assert!(b
        .image_status(&absent)
        .await
        .expect("image status")
        .is_none());
    for c in [&mut a, &mut b] {
        c.image
            .remove_image(cri::RemoveImageRequest {
                image: spec(&absent),
            })
            .await
            .expect("idempotent remove");
    }

    // An invalid reference is refused by both, before any network traffic.
    let ea = a.pull("Invalid/Ref").await.expect_err("crius");
    let eb = b.pull("Invalid/Ref").await.expect_err("containerd");
    assert_eq!(ea.code(), tonic::Code::InvalidArgument, "{ea:?}");
    // containerd 1.6 answers Unknown ("failed to parse image reference"): a malformed
    // argument is InvalidArgument in gRPC's own terms, so crius is the one that is right.
    assert_eq!(eb.code(), tonic::Code::Unknown, "{eb:?}");

    // Remove by tag: gone from both.
    let name = format!("{addr}/diff/docker:v1");
    for c in [&mut a, &mut b] {
        c.image
            .remove_image(cri::RemoveImageRequest { image: spec(&name) })
            .await
            .expect("remove");
        assert!(c.image_status(&name).await.expect("image status").is_none());
    }
}
