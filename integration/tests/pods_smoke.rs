//! The smallest end-to-end pod: the built-in pause image as both sandbox and container,
//! through every handler that runs here, with no registry. The full scenario suites
//! (`runtime_*`) build on busybox images from the test registry.

use crius_integration::cri::{CriClient, Daemon};
use crius_proto::cri;

const PAUSE: &str = "crius.local/pause:builtin";

fn pod(name: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "smoke".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        ..Default::default()
    }
}

async fn lifecycle(handler: &str) -> anyhow::Result<()> {
    lifecycle_with(handler, false).await
}

async fn lifecycle_with(handler: &str, privileged: bool) -> anyhow::Result<()> {
    let d = Daemon::start("")?;
    let mut c = CriClient::connect(&d.socket).await?;
    let mut cfg = pod(&format!("p-{handler}"));
    if privileged {
        cfg.linux = Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                privileged: true,
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let pod_id = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{handler}: RunPodSandbox: {e}\n{}", d.log()))?
        .into_inner()
        .pod_sandbox_id;
    let st = c
        .runtime
        .pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner();
    assert_eq!(
        st.status.map(|s| s.state),
        Some(cri::PodSandboxState::SandboxReady as i32)
    );
    // A duplicate name is refused.
    let dup = c
        .runtime
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(cfg.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .expect_err("duplicate");
    assert_eq!(dup.code(), tonic::Code::AlreadyExists, "{dup}");

    // A command the low-level runtime refuses: as with containerd, the task is made at
    // StartContainer, so CreateContainer succeeds and StartContainer fails (without
    // deadlocking on its own lock) with an error naming the cause; the container is then
    // Exited with reason StartError, and RemoveContainer leaves nothing behind.
    let bad_id = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "bad".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: PAUSE.into(),
                    ..Default::default()
                }),
                command: vec!["/no/such/binary".into()],
                ..Default::default()
            }),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{handler}: CreateContainer: {e}"))?
        .into_inner()
        .container_id;
    let bad = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        c.runtime.start_container(cri::StartContainerRequest {
            container_id: bad_id.clone(),
        }),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{handler}: a failing StartContainer hung"))?
    .expect_err("no such binary");
    // youki's own error does not name the path; runc's does.
    assert!(
        handler == "youki" || bad.message().contains("no/such/binary"),
        "{bad}"
    );
    let st = c
        .runtime
        .container_status(cri::ContainerStatusRequest {
            container_id: bad_id.clone(),
            verbose: false,
        })
        .await?
        .into_inner()
        .status
        .ok_or_else(|| anyhow::anyhow!("no status"))?;
    assert_eq!(
        st.state,
        cri::ContainerState::ContainerExited as i32,
        "{handler}"
    );
    assert_eq!(
        (st.reason.as_str(), st.exit_code),
        ("StartError", 128),
        "{handler}"
    );
    c.runtime
        .remove_container(cri::RemoveContainerRequest {
            container_id: bad_id,
        })
        .await?;
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest { filter: None })
        .await?
        .into_inner();
    assert!(left.containers.is_empty(), "{:?}", left.containers);

    let ctr = c
        .runtime
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod_id.clone(),
            config: Some(cri::ContainerConfig {
                metadata: Some(cri::ContainerMetadata {
                    name: "p".into(),
                    attempt: 0,
                }),
                image: Some(cri::ImageSpec {
                    image: PAUSE.into(),
                    ..Default::default()
                }),
                linux: privileged.then(|| cri::LinuxContainerConfig {
                    security_context: Some(cri::LinuxContainerSecurityContext {
                        privileged: true,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            sandbox_config: Some(cfg.clone()),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{handler}: CreateContainer: {e}\n{}", d.log()))?
        .into_inner()
        .container_id;
    c.runtime
        .start_container(cri::StartContainerRequest {
            container_id: ctr.clone(),
        })
        .await
        .map_err(|e| anyhow::anyhow!("{handler}: StartContainer: {e}\n{}", d.log()))?;
    let status = |s: cri::ContainerStatusResponse| s.status.unwrap_or_default();
    let st = status(
        c.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: ctr[..12].into(),
                verbose: true,
            })
            .await?
            .into_inner(),
    );
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    // The pause binary exits 0 on SIGTERM, once it has installed its handler: a SIGTERM in
    // its first moments (a loaded machine) kills it with 143 instead.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    c.runtime
        .stop_container(cri::StopContainerRequest {
            container_id: ctr.clone(),
            timeout: 10,
        })
        .await?;
    let st = status(
        c.runtime
            .container_status(cri::ContainerStatusRequest {
                container_id: ctr.clone(),
                verbose: false,
            })
            .await?
            .into_inner(),
    );
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    assert_eq!((st.exit_code, st.reason.as_str()), (0, "Completed"));
    c.runtime
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await?;
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id.clone(),
        })
        .await?;
    let left = c
        .runtime
        .list_containers(cri::ListContainersRequest { filter: None })
        .await?
        .into_inner();
    assert!(left.containers.is_empty());
    // Removing again is success.
    c.runtime
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_id,
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_pod_lifecycle_runc() -> anyhow::Result<()> {
    lifecycle("runc").await
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_pod_lifecycle_youki() -> anyhow::Result<()> {
    lifecycle("youki").await
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_pod_lifecycle_go_shim() -> anyhow::Result<()> {
    lifecycle("runc-go").await
}

#[tokio::test(flavor = "multi_thread")]
async fn privileged_pause_pod_runc() -> anyhow::Result<()> {
    lifecycle_with("runc", true).await
}
