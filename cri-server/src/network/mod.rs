//! Pod networking: pinned network namespaces (and CNI, later).

pub mod netns;
