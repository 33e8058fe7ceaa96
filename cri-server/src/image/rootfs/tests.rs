//! Overlay rootfs tests (root: real overlay mounts in temp dirs, always unmounted).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use super::{mount, unmount, Method, Overlay, RootfsError, Spec};
use crate::image::unpack::apply_layer;
use crate::image::unpack::tests::Layer;

/// Detaches the mount on drop, so a failed assertion leaves no mount behind.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn mkdirs(paths: &[&Path]) {
    for p in paths {
        fs::create_dir_all(p).unwrap();
    }
}

fn is_mounted(target: &Path) -> bool {
    let target = target.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(target))
}

#[tokio::test]
async fn three_layers_merge_with_whiteout_and_opaque() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |s: &str| tmp.path().join(s);
    let (l1, l2, l3, upper, work, merged) = (
        p("l1"),
        p("l2"),
        p("l3"),
        p("upper"),
        p("work"),
        p("merged"),
    );
    mkdirs(&[&l1, &l2, &l3, &upper, &work, &merged]);

    let bottom = Layer::new()
        .file("keep", 0o644, b"keep")
        .file("gone", 0o644, b"gone")
        .dir("d", 0o755)
        .file("d/old", 0o644, b"old")
        .finish();
    apply_layer(&bottom[..], &l1).unwrap();
    let mid = Layer::new()
        .whiteout(".wh.gone")
        .file("d/mid", 0o644, b"mid")
        .finish();
    apply_layer(&mid[..], &l2).unwrap();
    let top = Layer::new()
        .whiteout("d/.wh..wh..opq")
        .file("d/new", 0o644, b"new")
        .finish();
    apply_layer(&top[..], &l3).unwrap();

    let lowers = vec![l3.clone(), l2.clone(), l1.clone()];
    let ov = Overlay {
        lowers: &lowers,
        upper: &upper,
        work: &work,
    };
    assert!(Spec::new(&ov, &merged).unwrap().classic_data().is_some());
    mount(&ov, &merged).await.unwrap();
    let guard = MountGuard(merged.clone());
    assert!(is_mounted(&merged));

    assert_eq!(fs::read(merged.join("keep")).unwrap(), b"keep");
    assert!(!merged.join("gone").exists(), "whited-out file visible");
    assert!(merged.join("d").is_dir());
    let mut names: Vec<_> = fs::read_dir(merged.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["new"], "opaque dir shows lower entries");

    fs::write(merged.join("written"), b"w").unwrap();
    assert_eq!(fs::read(upper.join("written")).unwrap(), b"w");
    assert!(!l1.join("written").exists() && !l3.join("written").exists());
    fs::remove_file(merged.join("keep")).unwrap();
    assert!(l1.join("keep").exists(), "lower layer modified");

    unmount(&merged).await.unwrap();
    assert!(!is_mounted(&merged));
    assert!(!merged.join("new").exists());
    // Not mounted any more, or never there: both fine.
    unmount(&merged).await.unwrap();
    unmount(&tmp.path().join("absent")).await.unwrap();
    drop(guard);
}

#[tokio::test]
async fn deep_chain_with_long_paths_mounts_through_lowerdir_plus() {
    let tmp = tempfile::tempdir().unwrap();
    let long = tmp
        .path()
        .join("a".repeat(40))
        .join("b".repeat(40))
        .join("c".repeat(40));
    let lowers: Vec<PathBuf> = (0..200)
        .map(|i| {
            long.join(format!("snapshot-{i:03}-{}", "d".repeat(40)))
                .join("fs")
        })
        .collect();
    for l in &lowers {
        fs::create_dir_all(l).unwrap();
    }
    // lowers are top first: the last is the bottom layer.
    let bottom = Layer::new()
        .file("etc/bottom", 0o644, b"from the bottom")
        .finish();
    apply_layer(&bottom[..], lowers.last().unwrap()).unwrap();
    let top = Layer::new().file("etc/top", 0o644, b"top").finish();
    apply_layer(&top[..], &lowers[0]).unwrap();
    let (upper, work, merged) = (
        tmp.path().join("upper"),
        tmp.path().join("work"),
        tmp.path().join("merged"),
    );
    mkdirs(&[&upper, &work, &merged]);

    let ov = Overlay {
        lowers: &lowers,
        upper: &upper,
        work: &work,
    };
    let spec = Spec::new(&ov, &merged).unwrap();
    assert!(
        spec.classic_data().is_none(),
        "test chain must exceed one page"
    );
    let method = tokio::task::spawn_blocking(move || spec.mount())
        .await
        .unwrap()
        .unwrap();
    let guard = MountGuard(merged.clone());
    assert_eq!(method, Method::LowerdirPlus);
    assert_eq!(
        fs::read(merged.join("etc/bottom")).unwrap(),
        b"from the bottom"
    );
    assert_eq!(fs::read(merged.join("etc/top")).unwrap(), b"top");
    unmount(&merged).await.unwrap();
    assert!(!is_mounted(&merged));

    // The public entry point takes the same path.
    mount(&ov, &merged).await.unwrap();
    assert_eq!(
        fs::read(merged.join("etc/bottom")).unwrap(),
        b"from the bottom"
    );
    unmount(&merged).await.unwrap();
    drop(guard);
}

#[tokio::test]
async fn unusable_overlays_are_refused_before_mounting() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path().join("merged");
    let abs = tmp.path().join("x");
    let cases: Vec<(Vec<PathBuf>, PathBuf)> = vec![
        (vec![], abs.clone()),
        (vec![PathBuf::from("relative")], abs.clone()),
        (vec![tmp.path().join("a,b")], abs.clone()),
        (vec![tmp.path().join("a:b")], abs.clone()),
        (vec![abs.clone()], PathBuf::from("relative-upper")),
    ];
    for (lowers, upper) in cases {
        let ov = Overlay {
            lowers: &lowers,
            upper: &upper,
            work: &abs,
        };
        match mount(&ov, &t).await {
            Err(RootfsError::Invalid { .. }) => {}
            other => panic!("expected Invalid for {lowers:?} {upper:?}, got {other:?}"),
        }
    }
    // A kernel refusal carries the method and target.
    let missing = vec![tmp.path().join("missing")];
    fs::create_dir(&t).unwrap();
    let ov = Overlay {
        lowers: &missing,
        upper: &abs,
        work: &abs,
    };
    let _guard = MountGuard(t.clone());
    match mount(&ov, &t).await {
        Err(RootfsError::Mount { target, .. }) => assert_eq!(target, t),
        other => panic!("expected Mount error, got {other:?}"),
    }
}
