//! Single-use, short-lived tokens for streaming URLs.
//!
//! `Exec`, `Attach` and `PortForward` answer with a URL; whoever holds it may open the
//! stream once, within the token's lifetime. The token is the only credential on the
//! streaming server, so it is 32 random bytes, taken out of the cache by its first use,
//! and the number pending is bounded (an old pending token is evicted first, so a client
//! that asks for URLs and never uses them cannot grow the daemon).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why no token was issued.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The system's random source failed.
    #[error("generating a streaming token: {0}")]
    Random(#[source] std::io::Error),
}

struct Entry<T> {
    request: T,
    expires: Instant,
}

struct Inner<T> {
    pending: HashMap<String, Entry<T>>,
    /// Tokens in issue order, for eviction (may name tokens already taken).
    order: VecDeque<String>,
}

/// Pending requests keyed by their token.
pub struct Tokens<T> {
    ttl: Duration,
    max_pending: usize,
    inner: Mutex<Inner<T>>,
}

impl<T> Tokens<T> {
    /// Tokens living `ttl`, at most `max_pending` (at least 1) at once.
    pub fn new(ttl: Duration, max_pending: usize) -> Tokens<T> {
        Tokens {
            ttl,
            max_pending: max_pending.max(1),
            inner: Mutex::new(Inner {
                pending: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `request` and returns its new token (URL-safe).
    pub fn issue(&self, request: T) -> Result<String, TokenError> {
        let token = random_token()?;
        let now = Instant::now();
        let mut inner = self.lock();
        // Expired ones first, then the oldest pending while over the bound.
        inner.pending.retain(|_, e| e.expires > now);
        while inner.pending.len() >= self.max_pending {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.pending.remove(&old);
        }
        let live: std::collections::HashSet<String> = inner.pending.keys().cloned().collect();
        inner.order.retain(|t| live.contains(t));
        inner.pending.insert(
            token.clone(),
            Entry {
                request,
                expires: now + self.ttl,
            },
        );
        inner.order.push_back(token.clone());
        Ok(token)
    }

    /// Takes the request of `token`: `None` when unknown, already used or expired.
    pub fn take(&self, token: &str) -> Option<T> {
        let entry = self.lock().pending.remove(token)?;
        (entry.expires > Instant::now()).then_some(entry.request)
    }

    /// How many are pending (expired ones included until the next issue).
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }
}

/// 32 random bytes, hex: 64 URL-safe characters.
fn random_token() -> Result<String, TokenError> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(TokenError::Random)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_once() {
        let t = Tokens::new(Duration::from_secs(60), 10);
        let a = t.issue("exec a").expect("issue");
        let b = t.issue("exec b").expect("issue");
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(t.take(&a), Some("exec a"));
        assert_eq!(t.take(&a), None, "used");
        assert_eq!(t.take("nope"), None, "unknown");
        assert_eq!(t.take(&b), Some("exec b"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let t = Tokens::new(Duration::from_millis(30), 10);
        let a = t.issue(1).expect("issue");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.take(&a), None);
    }

    #[test]
    fn pending_tokens_are_bounded_oldest_first() {
        let t = Tokens::new(Duration::from_secs(60), 3);
        let toks: Vec<String> = (0..5).map(|i| t.issue(i).expect("issue")).collect();
        assert_eq!(t.pending(), 3);
        assert_eq!(t.take(&toks[0]), None);
        assert_eq!(t.take(&toks[1]), None);
        assert_eq!(t.take(&toks[4]), Some(4));
        // Taking frees room without evicting the others.
        let late = t.issue(9).expect("issue");
        assert_eq!(t.take(&toks[2]), Some(2));
        assert_eq!(t.take(&toks[3]), Some(3));
        assert_eq!(t.take(&late), Some(9));
    }
}
