//! Pod networking: pinned network namespaces, the CNI client, and the host's own address
//! for `host_network` pods.

pub mod cni;
pub mod host_ip;
pub mod netns;
