//! Publishing task events to the daemon (`TTRPC_ADDRESS`). Callers only enqueue: one task
//! sends in order, reconnecting and retrying, so a daemon that is down or slow never blocks
//! reaping or an RPC. Events that still fail after the retries are dropped and logged: the
//! daemon learns the state again through `State`/`Wait` when it reconnects.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use runtime_v2_api::{EventPublisher, TaskEvent};
use tokio::sync::{mpsc, Notify};

/// Attempts per event before it is dropped.
const ATTEMPTS: u32 = 8;

/// The shim's event queue; cheap to clone.
#[derive(Debug, Clone)]
pub struct Events {
    tx: mpsc::UnboundedSender<TaskEvent>,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
}

impl Events {
    /// Starts the sender task for `ttrpc_address` (empty: events are discarded).
    pub fn start(ttrpc_address: String, namespace: String) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        let idle = Arc::new(Notify::new());
        tokio::spawn(send_loop(
            rx,
            ttrpc_address,
            namespace,
            pending.clone(),
            idle.clone(),
        ));
        Events { tx, pending, idle }
    }

    /// Queues `event`.
    pub fn publish(&self, event: TaskEvent) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(event).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until everything queued was sent (or given up on), at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, async {
            loop {
                let notified = self.idle.notified();
                if self.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

async fn send_loop(
    mut rx: mpsc::UnboundedReceiver<TaskEvent>,
    address: String,
    namespace: String,
    pending: Arc<AtomicUsize>,
    idle: Arc<Notify>,
) {
    let mut publisher: Option<EventPublisher> = None;
    while let Some(event) = rx.recv().await {
        if !address.is_empty() {
            let mut delay = Duration::from_millis(20);
            for attempt in 1..=ATTEMPTS {
                if publisher.is_none() {
                    publisher = EventPublisher::connect(&address).await.ok();
                }
                let result = match &publisher {
                    Some(p) => p
                        .publish(&namespace, event.topic(), &event)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("cannot connect to {address}")),
                };
                match result {
                    Ok(()) => break,
                    Err(e) => {
                        publisher = None;
                        if attempt == ATTEMPTS {
                            crate::log::warn(&format!("dropping event {}: {e}", event.topic()));
                        } else {
                            tokio::time::sleep(delay).await;
                            delay = (delay * 2).min(Duration::from_secs(2));
                        }
                    }
                }
            }
        }
        if pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            idle.notify_waiters();
        }
    }
}
