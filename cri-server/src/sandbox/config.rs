//! A pod's configuration as crius's own types (converted from CRI at the edge).
