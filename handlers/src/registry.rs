//! The handlers of a running daemon: each resolved once to its shim binary, so a lookup
//! per pod is a map access and a missing shim fails only the pods that name it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::{Handler, HandlerError, Handlers};

/// A handler ready to launch: its config and its shim binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The handler's name (`runc`, `runc-go`, …).
    pub name: String,
    /// Its config.
    pub handler: Handler,
    /// The shim binary.
    pub shim: PathBuf,
}

impl Resolved {
    /// True when the shim is crius's own, which writes CRI logs itself and serves the
    /// `crius.shim.v1.Log` service.
    pub fn is_crius_shim(&self) -> bool {
        self.handler.runtime_type == CRIUS_RUNTIME_TYPE
    }
}

/// Runtime type of crius's own shim.
pub const CRIUS_RUNTIME_TYPE: &str = "io.containerd.crius.v2";

/// Why a pod's handler cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// No handler of that name is configured.
    #[error("runtime handler {name:?} is not configured (known handlers: {})", known.join(", "))]
    Unknown {
        /// the name asked for.
        name: String,
        /// the configured names.
        known: Vec<String>,
    },
    /// The handler is configured but its shim cannot be used on this host.
    #[error("runtime handler {name:?}: {source}")]
    Unavailable {
        /// the handler.
        name: String,
        /// why.
        source: HandlerError,
    },
}

/// Every configured handler with its shim, resolved at start-up.
#[derive(Debug, Clone)]
pub struct Registry {
    default: String,
    entries: BTreeMap<String, (Handler, Result<PathBuf, HandlerError>)>,
}

impl Registry {
    /// Resolves every handler's shim in `search` (see [`crate::shim_search_path`]).
    pub fn new(handlers: &Handlers, default: &str, search: &[PathBuf]) -> Registry {
        let entries = handlers
            .iter()
            .map(|(name, h)| (name.clone(), (h.clone(), h.resolve_shim(search))))
            .collect();
        Registry {
            default: default.to_string(),
            entries,
        }
    }

    /// The handler for `name`; empty means the default handler.
    pub fn lookup(&self, name: &str) -> Result<Resolved, LookupError> {
        let name = if name.is_empty() {
            self.default.as_str()
        } else {
            name
        };
        let Some((handler, shim)) = self.entries.get(name) else {
            return Err(LookupError::Unknown {
                name: name.to_string(),
                known: self.entries.keys().cloned().collect(),
            });
        };
        match shim {
            Ok(path) => Ok(Resolved {
                name: name.to_string(),
                handler: handler.clone(),
                shim: path.clone(),
            }),
            Err(e) => Err(LookupError::Unavailable {
                name: name.to_string(),
                source: e.clone(),
            }),
        }
    }

    /// The default handler's name.
    pub fn default_name(&self) -> &str {
        &self.default
    }

    /// Every handler name with its availability.
    pub fn names(&self) -> impl Iterator<Item = (&str, bool)> {
        self.entries
            .iter()
            .map(|(n, (_, shim))| (n.as_str(), shim.is_ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuntimeOptions;

    fn handlers() -> Handlers {
        let mut h = Handlers::new();
        h.insert(
            "present".into(),
            Handler {
                runtime_type: "io.containerd.x.v2".into(),
                shim_path: Some(PathBuf::from("/bin/sh")),
                options: RuntimeOptions::default(),
            },
        );
        h.insert(
            "absent".into(),
            Handler {
                runtime_type: "io.containerd.nosuch.v2".into(),
                shim_path: None,
                options: RuntimeOptions::default(),
            },
        );
        h
    }

    #[test]
    fn empty_name_is_the_default_and_unknown_lists_known() {
        let r = Registry::new(&handlers(), "present", &[PathBuf::from("/nonexistent")]);
        assert_eq!(r.lookup("").map(|h| h.name), Ok("present".to_string()));
        let err = r.lookup("kata").expect_err("unknown");
        let msg = err.to_string();
        assert!(msg.contains("\"kata\""), "{msg}");
        assert!(msg.contains("absent, present"), "{msg}");
        let err = r.lookup("absent").expect_err("missing shim");
        assert!(matches!(err, LookupError::Unavailable { .. }));
        assert!(err.to_string().contains("containerd-shim-nosuch-v2"));
    }
}
