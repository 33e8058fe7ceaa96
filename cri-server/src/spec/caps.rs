//! Linux capabilities: names, the default set, and add/drop arithmetic.

use std::collections::BTreeSet;
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability};

/// Every capability Linux knows (up to `CAP_CHECKPOINT_RESTORE`, Linux 5.9), in number order.
/// A privileged container gets all of them; runc ignores the ones an older kernel lacks.
pub const ALL: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capabilities of an unprivileged container: containerd's (and Docker's) default set.
pub const DEFAULT: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// The canonical spelling of a capability name: `ALL`, or `CAP_` + upper case. `None` when
/// the name is unknown. Accepts any case, with or without the `CAP_` prefix, as the kubelet
/// passes what the pod spec says (`NET_ADMIN`, `net_admin`, `CAP_NET_ADMIN`).
pub fn normalize(name: &str) -> Option<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Some(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    ALL.contains(&full.as_str()).then_some(full)
}

/// The OCI enum of a canonical `CAP_…` name.
pub fn to_oci(name: &str) -> Option<Capability> {
    Capability::from_str(name.strip_prefix("CAP_")?).ok()
}

/// The five capability sets of a process, kept as sorted names so that specs are stable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Bounding set.
    pub bounding: BTreeSet<String>,
    /// Effective set.
    pub effective: BTreeSet<String>,
    /// Permitted set.
    pub permitted: BTreeSet<String>,
    /// Inheritable set.
    pub inheritable: BTreeSet<String>,
    /// Ambient set.
    pub ambient: BTreeSet<String>,
}

impl CapSets {
    /// The sets of a process starting from `base` in bounding/effective/permitted, then
    /// `add` (there too), `add_ambient` (in every set), and `drop` (removed from every set).
    /// Like containerd, `ALL` in `add` means every capability and `ALL` in `drop` means none
    /// but what `add` names explicitly. Names must be canonical ([`normalize`]).
    pub fn compute(
        base: &[&str],
        add: &[String],
        drop: &[String],
        add_ambient: &[String],
    ) -> CapSets {
        let all = |list: &[String]| list.iter().any(|c| c == "ALL");
        let names = |list: &[String]| -> BTreeSet<String> {
            list.iter().filter(|c| *c != "ALL").cloned().collect()
        };
        let mut main: BTreeSet<String> = if all(add) {
            ALL.iter().map(|c| c.to_string()).collect()
        } else {
            base.iter().map(|c| c.to_string()).collect()
        };
        main.extend(names(add));
        if all(drop) {
            main = names(add);
        } else {
            for c in names(drop) {
                main.remove(&c);
            }
        }
        let mut ambient = names(add_ambient);
        if !all(drop) {
            for c in names(drop) {
                ambient.remove(&c);
            }
        } else {
            ambient.clear();
        }
        main.extend(ambient.iter().cloned());
        CapSets {
            bounding: main.clone(),
            effective: main.clone(),
            permitted: main,
            inheritable: ambient.clone(),
            ambient,
        }
    }
}

/// Converts sorted names to an OCI set (names are canonical; unknown ones are skipped).
pub fn oci_set(names: &BTreeSet<String>) -> Capabilities {
    names.iter().filter_map(|n| to_oci(n)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn normalize_accepts_any_spelling_and_rejects_unknown() {
        assert_eq!(normalize("net_admin").as_deref(), Some("CAP_NET_ADMIN"));
        assert_eq!(normalize("CAP_SYS_ADMIN").as_deref(), Some("CAP_SYS_ADMIN"));
        assert_eq!(normalize("Cap_Kill").as_deref(), Some("CAP_KILL"));
        assert_eq!(normalize("all").as_deref(), Some("ALL"));
        assert_eq!(normalize("CAP_FLY"), None);
        assert_eq!(normalize(""), None);
    }

    #[test]
    fn every_known_name_maps_to_the_oci_enum() {
        for name in ALL {
            assert!(to_oci(name).is_some(), "{name}");
        }
    }

    #[test]
    fn add_and_drop_apply_to_the_default_set() {
        let sets = CapSets::compute(DEFAULT, &v(&["CAP_NET_ADMIN"]), &v(&["CAP_KILL"]), &[]);
        assert!(sets.bounding.contains("CAP_NET_ADMIN"));
        assert!(!sets.effective.contains("CAP_KILL"));
        assert!(sets.permitted.contains("CAP_CHOWN"));
        assert!(sets.inheritable.is_empty());
        assert!(sets.ambient.is_empty());
        assert_eq!(sets.bounding.len(), DEFAULT.len());
    }

    #[test]
    fn all_in_add_or_drop() {
        let sets = CapSets::compute(DEFAULT, &v(&["ALL"]), &[], &[]);
        assert_eq!(sets.bounding.len(), ALL.len());
        let sets = CapSets::compute(DEFAULT, &v(&["ALL"]), &v(&["CAP_SYS_ADMIN"]), &[]);
        assert_eq!(sets.bounding.len(), ALL.len() - 1);
        assert!(!sets.bounding.contains("CAP_SYS_ADMIN"));
        let sets = CapSets::compute(DEFAULT, &v(&["CAP_CHOWN"]), &v(&["ALL"]), &[]);
        assert_eq!(sets.effective, ["CAP_CHOWN".to_string()].into());
        let sets = CapSets::compute(DEFAULT, &[], &v(&["ALL"]), &[]);
        assert!(sets.bounding.is_empty());
    }

    #[test]
    fn ambient_goes_into_every_set() {
        let sets = CapSets::compute(DEFAULT, &[], &[], &v(&["CAP_NET_ADMIN"]));
        for set in [
            &sets.bounding,
            &sets.effective,
            &sets.permitted,
            &sets.inheritable,
            &sets.ambient,
        ] {
            assert!(set.contains("CAP_NET_ADMIN"));
        }
        assert!(!sets.inheritable.contains("CAP_CHOWN"));
    }
}
