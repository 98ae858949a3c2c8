//! Linux: the eBPF exec program, the netlink proc connector and /proc; kernel uevents and sysfs for USB.

pub mod beneath;
#[cfg(invigilator_bpf)]
pub mod exec_bpf;
pub mod exec_record;
pub mod proc_connector;
pub mod procfs;
pub mod sysfs_usb;
pub mod uevent;
