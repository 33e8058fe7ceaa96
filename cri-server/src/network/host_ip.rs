//! The host's own address, which `host_network` pods report as their IP (they share it).
//!
//! The interface of the default route (`/proc/net/route`) decides; without one, the first
//! non-loopback address that is up.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One interface address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    /// Interface name.
    pub name: String,
    /// Address.
    pub ip: IpAddr,
}

/// The host's primary IP, `None` when it has only loopback.
pub fn host_ip() -> Option<IpAddr> {
    let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    pick(default_route_interface(&route).as_deref(), &addresses())
}

/// The interface of the IPv4 default route in a `/proc/net/route` table.
pub fn default_route_interface(table: &str) -> Option<String> {
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 7 && f[1] == "00000000" && f[7] == "00000000").then(|| f[0].to_string())
    })
}

/// The address of `preferred` (IPv4 first), else the first usable one.
pub fn pick(preferred: Option<&str>, addrs: &[IfAddr]) -> Option<IpAddr> {
    let usable = |a: &&IfAddr| match a.ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        IpAddr::V6(v6) => {
            !v6.is_loopback() && !v6.is_unspecified() && (v6.segments()[0] & 0xffc0) != 0xfe80
        }
    };
    let mut cands: Vec<&IfAddr> = addrs.iter().filter(usable).collect();
    cands.sort_by_key(|a| (Some(a.name.as_str()) != preferred, a.ip.is_ipv6()));
    cands.first().map(|a| a.ip)
}

/// Every address of every interface that is up.
pub fn addresses() -> Vec<IfAddr> {
    let mut out = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocates; freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_flags & libc::IFF_UP as u32 == 0 {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family says which
        // sockaddr_* it is; each branch reads only that type.
        let ip = unsafe {
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                        sin.sin_addr.s_addr,
                    ))))
                }
                libc::AF_INET6 => {
                    let sin6 = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
                }
                _ => None,
            }
        };
        if let Some(ip) = ip {
            out.push(IfAddr { name, ip });
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once; no reference outlives it.
    unsafe { libc::freeifaddrs(head) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
        eth1\t0011A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
        eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";

    fn a(name: &str, ip: &str) -> IfAddr {
        IfAddr {
            name: name.into(),
            ip: ip.parse().expect("ip"),
        }
    }

    #[test]
    fn default_route_decides() {
        assert_eq!(default_route_interface(ROUTES).as_deref(), Some("eth0"));
        let addrs = [
            a("lo", "127.0.0.1"),
            a("eth1", "192.168.17.5"),
            a("eth0", "fe80::1"),
            a("eth0", "2001:db8::5"),
            a("eth0", "192.168.1.9"),
        ];
        assert_eq!(
            pick(Some("eth0"), &addrs),
            Some("192.168.1.9".parse().expect("ip"))
        );
        assert_eq!(
            pick(None, &addrs),
            Some("192.168.17.5".parse().expect("ip"))
        );
        assert_eq!(pick(None, &[a("lo", "127.0.0.1"), a("lo", "::1")]), None);
    }

    #[test]
    fn this_host_has_loopback() {
        assert!(addresses().iter().any(|a| a.ip.is_loopback()));
    }
}
