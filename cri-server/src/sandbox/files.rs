//! The files a sandbox provides to its containers: hostname, hosts, resolv.conf, /dev/shm.
