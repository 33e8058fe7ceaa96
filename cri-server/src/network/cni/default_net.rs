//! crius's own pod network, used when the conf dir holds no loadable config (and the
//! `default_network` switch is on): a bridge with host-local addresses, portmap for
//! `hostPort`s and loopback, so that `make run` on a fresh machine gets pod networking.
//!
//! The conflist is written under crius's state dir, never into the conf dir: a user's
//! config, once one appears there, takes over at the next scan.

use std::path::PathBuf;

use serde_json::Value;

/// The default network's name (host-local keys its allocations by it).
pub const NAME: &str = "crius";
/// Its bridge, unless configured otherwise.
pub const BRIDGE: &str = "crius0";
/// Its subnet, unless configured otherwise (beside the 10.88/16 that podman and
/// containerd's examples use, so that both can live on one host).
pub const SUBNET: &str = "10.89.0.0/16";
/// The file name it is written as.
pub const FILE: &str = "10-crius-default.conflist";

/// Where and how the default network is made.
#[derive(Debug, Clone, PartialEq)]
pub struct DefaultNetwork {
    /// Directory the conflist is written to.
    pub dir: PathBuf,
    /// Bridge name.
    pub bridge: String,
    /// IPv4 subnet, CIDR.
    pub subnet: String,
    /// host-local's allocation dir.
    pub data_dir: PathBuf,
}

impl DefaultNetwork {
    /// The conflist.
    pub fn conflist(&self) -> Value {
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": NAME,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": true,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{ "subnet": self.subnet }]],
                        "routes": [{ "dst": "0.0.0.0/0" }],
                        "dataDir": self.data_dir,
                    }
                },
                { "type": "portmap", "capabilities": { "portMappings": true } },
                { "type": "loopback" }
            ]
        })
    }

    /// Writes the conflist (when it differs from what is there) and returns its path.
    pub fn write(&self) -> std::io::Result<PathBuf> {
        let path = self.dir.join(FILE);
        let bytes = serde_json::to_vec_pretty(&self.conflist()).map_err(std::io::Error::other)?;
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self.dir.join(format!(".{FILE}.tmp"));
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, &path)?;
        }
        Ok(path)
    }

    /// Its path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }
}
