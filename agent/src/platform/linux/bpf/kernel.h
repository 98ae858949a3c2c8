/* The few kernel types the exec program reads, declared for CO-RE rather than taken from a
 * generated vmlinux.h: `preserve_access_index` makes libbpf relocate every field access against
 * the running kernel's BTF at load time, so only the fields named here need to exist there, at
 * whatever offset. Fields nested in anonymous structs or unions on the kernel's side (mm_struct,
 * file) are found by name all the same. */
#ifndef INVIGILATOR_KERNEL_H
#define INVIGILATOR_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

/* UAPI values, stable by contract (include/uapi/linux/bpf.h). */
enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

struct qstr {
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
};

struct vfsmount {
	struct dentry *mnt_root;
};

struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct super_block {
	__u32 s_dev;
};

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
};

struct fs_struct {
	struct path pwd;
};

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

typedef struct {
	__u32 val;
} kuid_t;

struct task_struct {
	int pid;
	int tgid;
	struct task_struct *real_parent;
	struct mm_struct *mm;
	struct fs_struct *fs;
	char comm[16];
	kuid_t loginuid;
	unsigned int sessionid;
};

struct linux_binprm;

#pragma clang attribute pop

#endif
