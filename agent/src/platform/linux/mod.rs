//! Linux: the netlink proc connector and /proc.

pub mod proc_connector;
pub mod procfs;
