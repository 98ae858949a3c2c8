//! Linux: the netlink proc connector and /proc; kernel uevents and sysfs for USB.

pub mod beneath;
pub mod proc_connector;
pub mod procfs;
pub mod sysfs_usb;
pub mod uevent;
