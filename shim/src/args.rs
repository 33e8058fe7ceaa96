//! The shim's command line, as containerd writes it: Go-style flags (`-name value`,
//! `--name=value`, bare booleans) followed by an optional action (`start` or `delete`).
//! No action means "serve" (what `start` re-executes itself into).

use std::path::PathBuf;

/// What the invocation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Start (or find) the shim serving this task and print its address.
    Start,
    /// Clean up after a shim that died: kill and delete the task, unmount, print the result.
    Delete,
    /// Serve the Task service on the listener inherited as fd 3.
    Serve,
    /// Print the version and exit.
    Version,
}

/// Parsed flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Args {
    /// containerd namespace (`-namespace`).
    pub namespace: String,
    /// The daemon's socket (`-address`); the shim socket directory is derived from it.
    pub address: String,
    /// Binary the Go shims use to publish events; kept for compatibility, unused.
    pub publish_binary: String,
    /// Task id (`-id`).
    pub id: String,
    /// Bundle dir (`-bundle`); defaults to the working directory.
    pub bundle: Option<PathBuf>,
    /// `-debug`.
    pub debug: bool,
    /// What to do.
    pub action: Action,
}

/// A command line the shim cannot act on; the message names the flag.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    /// A flag that takes a value came last.
    #[error("flag -{0} needs a value")]
    MissingValue(String),
    /// A flag we do not know.
    #[error("unknown flag -{0}")]
    UnknownFlag(String),
    /// More than one positional word, or an unknown one.
    #[error("unknown action {0:?} (expected start, delete or none)")]
    UnknownAction(String),
    /// A flag the action needs was not given.
    #[error("flag -{0} is required")]
    Required(&'static str),
}

impl Args {
    /// Parses `argv` without the program name.
    pub fn parse<I, S>(argv: I) -> Result<Args, ArgsError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut args = Args {
            namespace: String::new(),
            address: String::new(),
            publish_binary: String::new(),
            id: String::new(),
            bundle: None,
            debug: false,
            action: Action::Serve,
        };
        let mut action: Option<String> = None;
        let mut it = argv.into_iter().map(Into::into);
        while let Some(word) = it.next() {
            let Some(flag) = word.strip_prefix("--").or_else(|| word.strip_prefix('-')) else {
                if action.replace(word.clone()).is_some() {
                    return Err(ArgsError::UnknownAction(word));
                }
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (flag.to_string(), None),
            };
            match name.as_str() {
                "debug" => args.debug = inline.as_deref() != Some("false"),
                "v" | "version" => args.action = Action::Version,
                "namespace" | "address" | "publish-binary" | "id" | "bundle" | "socket" => {
                    let value = match inline {
                        Some(v) => v,
                        None => it
                            .next()
                            .ok_or_else(|| ArgsError::MissingValue(name.clone()))?,
                    };
                    match name.as_str() {
                        "namespace" => args.namespace = value,
                        "address" => args.address = value,
                        "publish-binary" => args.publish_binary = value,
                        "id" => args.id = value,
                        "bundle" => args.bundle = Some(PathBuf::from(value)),
                        // `-socket` (containerd 1.x debug); we derive our own.
                        _ => {}
                    }
                }
                _ => return Err(ArgsError::UnknownFlag(name)),
            }
        }
        if args.action != Action::Version {
            args.action = match action.as_deref() {
                None => Action::Serve,
                Some("start") => Action::Start,
                Some("delete") => Action::Delete,
                Some(other) => return Err(ArgsError::UnknownAction(other.to_string())),
            };
            if args.namespace.is_empty() {
                return Err(ArgsError::Required("namespace"));
            }
            if args.id.is_empty() && args.action != Action::Serve {
                return Err(ArgsError::Required("id"));
            }
        }
        Ok(args)
    }

    /// The bundle dir: `-bundle`, else the working directory (containerd sets both).
    pub fn bundle_dir(&self) -> std::io::Result<PathBuf> {
        match &self.bundle {
            Some(b) => Ok(b.clone()),
            None => std::env::current_dir(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containerd_start_line() {
        let a = Args::parse([
            "-namespace",
            "k8s.io",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "abc",
            "-debug",
            "start",
        ])
        .expect("parse");
        assert_eq!(a.namespace, "k8s.io");
        assert_eq!(a.address, "/run/containerd/containerd.sock");
        assert_eq!(a.id, "abc");
        assert!(a.debug);
        assert_eq!(a.action, Action::Start);
    }

    #[test]
    fn delete_with_bundle_and_equals_form() {
        let a = Args::parse(["--namespace=ns", "-id=x", "-bundle", "/b", "delete"]).expect("parse");
        assert_eq!(a.action, Action::Delete);
        assert_eq!(a.bundle_dir().expect("bundle"), PathBuf::from("/b"));
    }

    #[test]
    fn serve_needs_no_action() {
        let a = Args::parse(["-namespace", "ns", "-id", "x"]).expect("parse");
        assert_eq!(a.action, Action::Serve);
    }

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            Args::parse(["-namespace"]),
            Err(ArgsError::MissingValue("namespace".into()))
        );
        assert_eq!(
            Args::parse(["-nope", "1"]),
            Err(ArgsError::UnknownFlag("nope".into()))
        );
        assert_eq!(
            Args::parse(["-namespace", "n", "-id", "x", "frobnicate"]),
            Err(ArgsError::UnknownAction("frobnicate".into()))
        );
        assert_eq!(
            Args::parse(["-id", "x", "start"]),
            Err(ArgsError::Required("namespace"))
        );
    }
}
