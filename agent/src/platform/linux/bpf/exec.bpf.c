// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/* Names every program start inside the kernel, at sched_process_exec: the new program's path,
 * its command line and its working directory are read before the process can exit, however
 * short-lived it is. One variable-length record per exec goes to a ring buffer; the agent
 * (platform/linux/exec_bpf.rs) parses it. The layout below is that file's contract. */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Record header, 96 bytes, little-endian, naturally aligned. Then `data`: the executable's path
 * as NUL-terminated components leaf first (`exe_bytes`), the raw command line (`argv_bytes`,
 * arguments NUL-separated as the kernel keeps them), and the working directory like the path
 * (`cwd_bytes`). */
struct exec_record {
	__u64 ktime_ns;
	__u64 exe_ino;
	__u64 argv_full;
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 gid;
	__u32 loginuid;
	__u32 sessionid;
	__u32 exe_dev;
	__u16 exe_bytes;
	__u16 argv_bytes;
	__u16 cwd_bytes;
	__u8 flags;
	__u8 pad[5];
	char comm[16];
	char parent_comm[16];
};

#define FLAG_EXE_TRUNCATED 1
#define FLAG_ARGV_TRUNCATED 2
#define FLAG_CWD_TRUNCATED 4
#define FLAG_NO_EXE 8
#define FLAG_NO_CWD 16

/* Bounds. A path keeps at most PATH_DEPTH components and PATH_BUDGET bytes, the command line
 * ARGV_MAX bytes (the agent's own budget, limits::ARGV_TOTAL, is larger; the full length is
 * always sent), so a record's data is under 17 KiB. Every write starts at an offset masked to
 * CURSOR_MASK, which is what lets the verifier prove it stays inside the DATA_SIZE scratch
 * buffer; the mask never changes a real offset. */
#define PATH_DEPTH 48
#define PATH_BUDGET 4096
#define COMPONENT_MAX 256
#define ARGV_MAX 8192
#define DATA_SIZE 65536
#define CURSOR_MASK 0x7FFF
#define SIZE_MASK 0xFFFF

struct exec_buf {
	struct exec_record rec;
	char data[DATA_SIZE];
	/* Where the next write goes in `data`, and where the path being walked began. Kept here
	 * rather than on the stack on purpose: the verifier does not track map memory, so each
	 * step of a walk starts from the same state and is proven safe once, instead of once per
	 * offset (which overran its million-instruction budget). */
	__u32 cursor;
	__u32 path_start;
};

struct exec_stats {
	__u64 seen;
	__u64 dropped;
	__u64 truncated;
};

/* One scratch record per CPU, indexed by CPU number: a per-CPU array would do, but its values
 * are capped at 32 KiB. The agent sets max_entries to the number of possible CPUs. A program
 * does not run twice at once on one CPU, so a slot is never shared. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_buf);
} scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct exec_stats);
} stats SEC(".maps");

/* Sized by the agent before loading (`[process] ring_buffer_bytes`). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

/* One step of a path walk, as bpf_loop's callback. */
struct walk {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u8 truncated;
	__u8 done;
};

static long walk_step(__u32 i, void *arg)
{
	struct walk *w = arg;
	__u32 cpu = bpf_get_smp_processor_id();
	struct exec_buf *buf = bpf_map_lookup_elem(&scratch, &cpu);

	if (!buf) {
		w->truncated = 1;
		return 1;
	}
	/* Copied out of `w` first: BPF_CORE_READ on `w->field` would ask libbpf to relocate our
	 * own struct walk against the kernel's BTF. */
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;
	struct dentry *root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);

	if (dentry == root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);

		/* The root of the tree, or a dentry cut loose (d_parent is itself): done. */
		if (up == mnt || dentry != root) {
			w->done = 1;
			return 1;
		}
		/* The root of a mounted filesystem: go on from where it is mounted. */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = (struct vfsmount *)((char *)up + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	__u32 off = buf->cursor;

	if (off - buf->path_start >= PATH_BUDGET) {
		w->truncated = 1;
		return 1;
	}
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	long n = bpf_probe_read_kernel_str(&buf->data[off & CURSOR_MASK], COMPONENT_MAX, name);

	if (n <= 0) {
		w->truncated = 1;
		return 1;
	}
	buf->cursor = off + n;
	w->dentry = parent;
	return 0;
}

/* Appends `path`'s components, leaf first, at buf->cursor, which it moves on. Crosses mount
 * points up to the root of the mount tree. */
static __always_inline void read_path(struct exec_buf *buf, struct path *path, __u8 *truncated)
{
	struct vfsmount *vfsmnt = BPF_CORE_READ(path, mnt);
	struct walk w = {
		.dentry = BPF_CORE_READ(path, dentry),
		.vfsmnt = vfsmnt,
		.mnt = (struct mount *)((char *)vfsmnt - bpf_core_field_offset(struct mount, mnt)),
	};

	buf->path_start = buf->cursor;
	bpf_loop(PATH_DEPTH, walk_step, &w, 0);
	/* Deeper than PATH_DEPTH components: what was read is kept, flagged. */
	if (w.truncated || !w.done)
		*truncated = 1;
}

static __always_inline int handle(struct task_struct *task)
{
	__u32 zero = 0;
	__u32 cpu = bpf_get_smp_processor_id();
	struct exec_stats *st = bpf_map_lookup_elem(&stats, &zero);
	struct exec_buf *buf = bpf_map_lookup_elem(&scratch, &cpu);

	if (!st || !buf)
		return 0;
	st->seen++;

	struct exec_record *rec = &buf->rec;
	__u64 uid_gid = bpf_get_current_uid_gid();
	__u8 truncated = 0;
	__u32 off;

	rec->ktime_ns = bpf_ktime_get_ns();
	rec->pid = BPF_CORE_READ(task, tgid);
	rec->ppid = BPF_CORE_READ(task, real_parent, tgid);
	rec->uid = (__u32)uid_gid;
	rec->gid = (__u32)(uid_gid >> 32);
	rec->loginuid = (__u32)-1;
	rec->sessionid = (__u32)-1;
	if (bpf_core_field_exists(task->loginuid)) {
		rec->loginuid = BPF_CORE_READ(task, loginuid.val);
		rec->sessionid = BPF_CORE_READ(task, sessionid);
	}
	rec->flags = 0;
	BPF_CORE_READ_STR_INTO(&rec->comm, task, comm);
	BPF_CORE_READ_STR_INTO(&rec->parent_comm, task, real_parent, comm);

	struct mm_struct *mm = BPF_CORE_READ(task, mm);
	struct file *exe = BPF_CORE_READ(mm, exe_file);

	rec->exe_ino = 0;
	rec->exe_dev = 0;
	buf->cursor = 0;
	if (exe) {
		rec->exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
		rec->exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
		read_path(buf, &exe->f_path, &truncated);
		if (truncated)
			rec->flags |= FLAG_EXE_TRUNCATED;
	} else {
		rec->flags |= FLAG_NO_EXE;
	}
	off = buf->cursor;
	rec->exe_bytes = off;

	unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
	unsigned long arg_end = BPF_CORE_READ(mm, arg_end);
	__u64 full = arg_end > arg_start ? arg_end - arg_start : 0;
	__u32 len = full > ARGV_MAX ? ARGV_MAX : (__u32)full;

	rec->argv_full = full;
	if (full > ARGV_MAX)
		rec->flags |= FLAG_ARGV_TRUNCATED;
	if (len > 0 && bpf_probe_read_user(&buf->data[off & CURSOR_MASK], len & (2 * ARGV_MAX - 1),
					   (void *)arg_start) == 0) {
		rec->argv_bytes = len;
		off += len;
	} else {
		rec->argv_bytes = 0;
		if (len > 0)
			rec->flags |= FLAG_ARGV_TRUNCATED;
	}

	struct fs_struct *fs = BPF_CORE_READ(task, fs);
	__u32 cwd_start = off;

	buf->cursor = off;
	truncated = 0;
	if (fs) {
		read_path(buf, &fs->pwd, &truncated);
		if (truncated)
			rec->flags |= FLAG_CWD_TRUNCATED;
	} else {
		rec->flags |= FLAG_NO_CWD;
	}
	off = buf->cursor;
	rec->cwd_bytes = off - cwd_start;

	if (rec->flags & (FLAG_EXE_TRUNCATED | FLAG_ARGV_TRUNCATED | FLAG_CWD_TRUNCATED))
		st->truncated++;
	__u64 size = sizeof(struct exec_record) + (off & SIZE_MASK);

	if (size > sizeof(struct exec_record) + DATA_SIZE)
		size = sizeof(struct exec_record) + DATA_SIZE;
	if (bpf_ringbuf_output(&events, buf, size, 0) != 0)
		st->dropped++;
	return 0;
}

/* Preferred: a BTF-typed tracepoint, which needs only CAP_BPF and CAP_PERFMON. */
SEC("tp_btf/sched_process_exec")
int BPF_PROG(exec_btf, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	return handle(p);
}

/* Second choice, for kernels that refuse the first: the classic tracepoint. */
SEC("tp/sched/sched_process_exec")
int exec_tp(void *ctx)
{
	return handle((struct task_struct *)bpf_get_current_task());
}
