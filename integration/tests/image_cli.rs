//! `crius image …`: import of OCI layout and `docker save` archives, pull with progress
//! lines, and the refusal to touch a store a running daemon owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crius_integration::cri::{config_text, Daemon};
use crius_integration::host;
use crius_integration::image_builder::{Compression, Image, ImageConfig, Layer, LinkStyle};
use crius_integration::oci_archive::{image_archive, Blob};
use crius_integration::registry::{Registry, RegistryOptions};

/// A config file (`dir/cli.toml`) whose root is `dir/root`, plus `extra`.
fn config(dir: &Path, extra: &str) -> PathBuf {
    let text = config_text(dir, &dir.join("cli.sock"), extra).expect("config");
    let p = dir.join("cli.toml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn crius(cfg: &Path, args: &[&str]) -> Output {
    Command::new(host::workspace_binary("crius"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .output()
        .expect("run crius")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A `docker save` archive: manifest.json, the config, one uncompressed layer.
fn docker_save(name: &str) -> Vec<u8> {
    let layer = Layer::new()
        .file("etc/saved", "from docker save", 0o644)
        .tar()
        .expect("layer");
    let diff_id = Blob::new(layer.clone()).digest;
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]}
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": "cfg.json", "RepoTags": [name], "Layers": ["abc/layer.tar"]
    }]))
    .expect("manifest");
    let mut out = tar::Builder::new(Vec::new());
    for (path, bytes) in [
        ("manifest.json", &manifest),
        ("cfg.json", &config),
        ("abc/layer.tar", &layer),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        out.append_data(&mut h, path, bytes.as_slice())
            .expect("append");
    }
    out.into_inner().expect("tar")
}

#[test]
fn import_oci_layout_and_docker_save_archives() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(dir.path(), "");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("rootfs");
    std::fs::write(rootfs.join("etc/hello"), "hi").expect("file");

    let oci = dir.path().join("oci.tar");
    std::fs::write(
        &oci,
        image_archive(&rootfs, "example.com/oci/img:1", &["sh"]).expect("oci"),
    )
    .expect("write");
    let o = crius(&cfg, &["image", "import", oci.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("example.com/oci/img:1"), "{}", text(&o));

    // gzip-compressed docker save, with a short name that must be normalized.
    let saved = dir.path().join("saved.tar.gz");
    std::fs::write(
        &saved,
        crius_integration::oci_archive::gzip(&docker_save("saved:2")).expect("gzip"),
    )
    .expect("write");
    let o = crius(&cfg, &["image", "import", saved.to_str().expect("path")]);
    assert!(o.status.success(), "{}", text(&o));

    let o = crius(&cfg, &["image", "list"]);
    let listing = text(&o);
    for name in [
        "example.com/oci/img:1",
        "docker.io/library/saved:2",
        "crius.local/pause:builtin",
    ] {
        assert!(listing.contains(name), "{name} missing: {listing}");
    }

    // Not an archive: a clear error naming the file.
    let junk = dir.path().join("junk.tar");
    std::fs::write(&junk, b"not a tar at all").expect("write");
    let o = crius(&cfg, &["image", "import", junk.to_str().expect("path")]);
    assert!(!o.status.success());
    assert!(text(&o).contains("junk.tar"), "{}", text(&o));

    // Removal by name, then the list no longer has it.
    let o = crius(&cfg, &["image", "rm", "saved:2"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&crius(&cfg, &["image", "list"])).contains("saved:2"));
}

#[tokio::test]
async fn pull_prints_progress_lines_and_refuses_a_store_in_use() {
    let reg = Registry::start(RegistryOptions::default()).expect("registry");
    let image = Image::new(
        ImageConfig::default(),
        vec![
            Layer::new()
                .busybox(LinkStyle::Symlink)
                .expect("busybox")
                .build(Compression::Gzip)
                .expect("layer"),
            Layer::new()
                .file("etc/two", "2", 0o644)
                .build(Compression::Zstd)
                .expect("layer"),
        ],
    );
    reg.client()
        .push_image("cli/img", "v1", &image)
        .await
        .expect("push");
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!("\n[registry.hosts.\"{}\"]\ninsecure = true\n", reg.addr());
    let cfg = config(dir.path(), &extra);
    let name = format!("{}/cli/img:v1", reg.addr());

    // Not a terminal: one plain line per state change, no escape sequences.
    let o = crius(&cfg, &["image", "pull", &name]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains('\x1b'), "{out}");
    assert!(
        out.contains("resolved to sha256:") && out.contains("(2 layers)"),
        "{out}"
    );
    for l in &image.layers {
        let short = &l.digest()["sha256:".len().."sha256:".len() + 12];
        assert!(
            out.contains(&format!("layer {short}: verified and unpacked")),
            "{short}: {out}"
        );
    }
    // Pulled again: the layers are already there.
    let again = text(&crius(&cfg, &["image", "pull", &name]));
    assert!(again.contains("already present"), "{again}");

    // A daemon on the same root owns the store: the CLI says so instead of corrupting it.
    let d = Daemon::start(&extra).expect("daemon");
    let shared = config(d.dir(), &extra);
    let o = crius(&shared, &["image", "pull", &name]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("is the crius daemon running"),
        "{}",
        text(&o)
    );
}
