//! `containerd-shim-crius-v2`: a per-pod runtime v2 supervisor.
//!
//! Will own: the Task service (served as `containerd.task.v2.Task` and `v3`), the process
//! table, the runc-compatible runtime driver (runc, crun, youki), subreaping, stdio (fifo,
//! `file://`, `binary://`, CRI log), pty, OOM and exit events, stats, pause/resume, update.
