//! Network namespaces pinned under the state dir.
