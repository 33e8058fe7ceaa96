//! CRI-format container logs written by the daemon for shims that do not write them.
