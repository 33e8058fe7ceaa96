//! Our shim as a drop-in under a real containerd 1.6: `ctr run --runtime
//! io.containerd.crius.v2` must give the same output and exit code as containerd's own
//! `io.containerd.runc.v2`.

use crius_integration::bundle::busybox_rootfs;
use crius_integration::containerd::{Containerd, ContainerdOptions};
use crius_integration::host;
use crius_integration::oci_archive::image_archive;
use crius_integration::shim::random_id;

const IMAGE: &str = "docker.io/library/busybox:latest";

fn ctr_run(ctd: &Containerd, runtime: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let id = random_id("ctr-");
    let mut argv = vec![
        "-n",
        "crius-test",
        "run",
        "--rm",
        "--runtime",
        runtime,
        IMAGE,
        &id,
    ];
    argv.extend_from_slice(args);
    let out = ctd.ctr(&argv).expect("ctr run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn ctr_run_with_our_shim_matches_runc_v2() {
    let ctd = Containerd::start(ContainerdOptions {
        cri: false,
        path_dirs: vec![host::target_dir()],
        ..Default::default()
    })
    .expect("containerd");
    let archive = ctd.dir().join("busybox.tar");
    std::fs::write(
        &archive,
        image_archive(busybox_rootfs(), IMAGE, &["sh"]).expect("archive"),
    )
    .expect("write archive");
    let out = ctd
        .ctr(&[
            "-n",
            "crius-test",
            "image",
            "import",
            archive.to_str().expect("utf8 path"),
        ])
        .expect("ctr import");
    assert!(
        out.status.success(),
        "import: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let script = ["sh", "-c", "echo out-line; echo err-line >&2; exit 3"];
    let ours = ctr_run(&ctd, "io.containerd.crius.v2", &script);
    let theirs = ctr_run(&ctd, "io.containerd.runc.v2", &script);
    assert_eq!(
        theirs.0,
        Some(3),
        "Go shim reference run: {theirs:?}\n{}",
        ctd.log()
    );
    assert_eq!(
        ours.0,
        theirs.0,
        "exit code: ours {ours:?} vs runc.v2 {theirs:?}\n{}",
        ctd.log()
    );
    assert_eq!(ours.1, theirs.1, "stdout");
    assert_eq!(ours.1, "out-line\n");
    assert!(ours.2.contains("err-line"), "stderr: {:?}", ours.2);

    // A second run reuses nothing from the first and still works (the shim exited cleanly).
    let again = ctr_run(&ctd, "io.containerd.crius.v2", &["true"]);
    assert_eq!(again.0, Some(0), "{again:?}\n{}", ctd.log());

    // ctr run --rm removed every task: no shim of ours is left running for this containerd.
    let sock_dir = ctd.dir().join("s");
    let leftover = std::fs::read_dir(&sock_dir).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftover, 0, "shim sockets left in {}", sock_dir.display());
}
