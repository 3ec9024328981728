// SPDX-License-Identifier: (Apache-2.0 OR GPL-2.0-only)
/*
 * procguard's kernel side: one record per exec, fork and exit, written at the kernel's own
 * tracepoints (BTF-typed: tp_btf) into one BPF ring buffer that the sensor reads
 * (sensor/src/ebpf.rs).
 *
 * At exec everything is read from the exec'ing task while it is still in the kernel: its
 * IDs, parent, start time, cgroup (v2, the default hierarchy), the file name as invoked, the
 * executed file's identity (device, inode, link count, file system magic, its own name), its
 * path (walked up from the exec's own `bprm->file`, see exe_path) and argv from the new
 * image's initial stack, bounded as the sensor bounds /proc reads (MAX_ARGS arguments, each
 * read with ARG_READ bytes) with truncation flagged. Nothing here races the process's exit
 * or a later exec. An exec record is built in a per-CPU scratch slot and copied into the ring
 * buffer at its real length.
 *
 * Wake-ups are batched by the ring buffer's adaptive notification (flags 0): the kernel wakes
 * the reader only for a record committed when the reader had caught up; while the reader
 * pauses between drains (DRAIN_EVERY in capture.rs) records accumulate without a wake-up.
 *
 * A record that does not fit is never dropped silently: each failed reservation or output is
 * counted in the per-CPU `losses` map, which the sensor folds into its loss accounting.
 *
 * Licence: dual, so that the kernel grants the GPL-only helpers (bpf_probe_read_user, ...).
 */
#include "core.h"
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define KIND_EXEC 1
#define KIND_FORK 2
#define KIND_EXIT 3

#define FLAG_ARGV_TRUNCATED 1
#define FLAG_FILENAME_TRUNCATED 2
/* The executable's path: longer than PATH_BYTES or deeper than PATH_DEPTH (what was walked is
 * not sent as if it were the path); */
#define FLAG_PATH_TRUNCATED 4
/* its dentry was unlinked at the exec (d_path's " (deleted)"); */
#define FLAG_PATH_DELETED 8
/* the file is a pseudo file whose name the kernel makes up (d_op->d_dname: a memfd's
 * "/memfd:NAME (deleted)"): the path is its dentry's name after a '/', nothing walked; */
#define FLAG_PATH_PSEUDO 16
/* the walk met a dentry that is its own parent below its mount's root (d_path prints "/"). */
#define FLAG_PATH_UNREACHABLE 32

#define NAME_BYTES 256
/* argv as the sensor bounds it when it reads /proc (procfs.rs MAX_ARGS, MAX_ARG_LEN): each
 * argument is read with room for 3 bytes more than it keeps, so that the parser cuts it at a
 * character boundary and flags the cut exactly as for a /proc read. */
#define MAX_ARGS 64
#define ARG_READ (1024 + 4)
/* Path and argv bytes of one record at most; offsets are masked with ARGV_MASK for the
 * verifier. */
#define ARGV_MASK ((128 * 1024) - 1)
/* The executable's path: PATH_MAX bytes at most, PATH_DEPTH names and mount crossings. */
#define PATH_BYTES 4096
#define PATH_MASK (PATH_BYTES - 1)
#define PATH_DEPTH 64
/* NAME_MAX: the longest name a dentry has. */
#define DNAME_MAX 255

/* Layout shared with sensor/src/ebpf.rs (parsed there by offset, checked by size). */
struct exec_record {
	u32 kind;
	u32 flags;
	u32 pid;
	u32 tgid;
	u32 ppid;
	u32 uid;
	u32 gid;
	u32 exe_dev;
	u64 start_boottime;
	u64 cgroup_id;
	u64 exe_ino;
	u64 exe_magic;
	u64 ktime;
	u32 exe_nlink;
	u32 argv_len;
	u32 filename_len;
	u32 argc;
	char comm[16];
	char name[NAME_BYTES];
	char filename[NAME_BYTES];
	u32 path_len;
	/* The exec'ing task's mount namespace (the inode /proc/<pid>/ns/mnt links to): whose
	 * mount table places the file, read from another process only when it is the same. */
	u32 mnt_ns;
	/* path_len bytes of the executable's path (no NUL), then argv_len bytes of NUL-terminated
	 * arguments follow (the record is that much longer). */
};

/* A record is built here, then copied to the ring buffer at its real length (most execs'
 * path and argv are a few dozen bytes each, the bounds 4 KiB and 64 KiB). The path is walked
 * from its last name up, so it is written backwards into `path` first (ending at PATH_BYTES;
 * DNAME_MAX bytes of slack let the verifier see every masked write in bounds). */
struct exec_scratch {
	struct exec_record r;
	char var[ARGV_MASK + 1 + ARG_READ];
	char path[PATH_BYTES + DNAME_MAX + 1];
};

struct task_record {
	u32 kind;
	u32 flags;
	u32 pid;
	u32 tgid;
	u32 ppid;
	u32 pad;
	u64 start_boottime;
	u64 ktime;
};

_Static_assert(sizeof(struct exec_record) == 624, "exec_record layout is shared with ebpf.rs");
_Static_assert(sizeof(struct task_record) == 40, "task_record layout is shared with ebpf.rs");

/* The sensor sizes it before loading (set_max_entries: --ebpf-ring-bytes, 2 MiB by default). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} events SEC(".maps");

/* One slot per CPU, indexed by the CPU the program runs on (tracing programs run with
 * migration disabled). Not a per-CPU array, whose values are limited to 32 KiB. The sensor
 * sets max_entries to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct exec_scratch);
} scratch SEC(".maps");

/* Records that did not fit in `events`, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} losses SEC(".maps");

/* When the reader was last woken (bpf_ktime_get_ns), for all CPUs: two CPUs racing on it cost
 * at most one wake-up more. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} woken SEC(".maps");

/* While records keep coming, the reader is woken at most this long after its last wake-up
 * (the sensor's ebpf::WAKE_AFTER). */
#define WAKE_AFTER_NS (40ULL * 1000 * 1000)

/* Batched wake-ups: the reader is woken when a quarter of the ring buffer waits to be read
 * (this `record`'s bytes included), or by a record that comes WAKE_AFTER_NS or more after the
 * last wake-up (so a lone record, after a quiet spell, wakes it at once); otherwise not. A burst wakes the reader as the ring
 * fills, however fast it comes. Records that came just after a wake-up, with none after
 * them, wait for the reader's own timeout (its 100 ms tick). */
static __always_inline u64 wake_flags(u64 record)
{
	u32 zero = 0;
	u64 *last = bpf_map_lookup_elem(&woken, &zero);
	if (!last)
		return BPF_RB_FORCE_WAKEUP;
	/* This record counted: one that alone fills a quarter wakes the reader. */
	u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + record;
	u64 size = bpf_ringbuf_query(&events, BPF_RB_RING_SIZE);
	u64 now = bpf_ktime_get_ns();
	if (waiting >= size / 4 || now - *last >= WAKE_AFTER_NS) {
		*last = now;
		return BPF_RB_FORCE_WAKEUP;
	}
	return BPF_RB_NO_WAKEUP;
}

static __always_inline void count_loss(void)
{
	u32 zero = 0;
	u64 *n = bpf_map_lookup_elem(&losses, &zero);
	if (n)
		*n += 1;
}

/* Where the path being walked starts in `s->path` (it ends at PATH_BYTES). Kept in the map
 * value, not in a register: a load from a map value is a number the verifier knows nothing
 * of, so the walk's states (one per count of names written) merge instead of multiplying
 * with its steps and its every way of ending (which exceeded the verifier's budget). */
#define WALK_OFF(s) (*(volatile u32 *)&(s)->r.path_len)

/* Writes `/name` in front of what `s->path` holds. 0 when it does not fit. */
static __always_inline int prepend(struct exec_scratch *s, const struct qstr *q)
{
	u32 len = BPF_CORE_READ(q, len);
	const unsigned char *name = BPF_CORE_READ(q, name);
	u32 off = WALK_OFF(s);
	if (off > PATH_BYTES || len > DNAME_MAX || len + 1 > off)
		return 0;
	u32 at = off - len - 1;
	if (bpf_probe_read_kernel(&s->path[(at + 1) & PATH_MASK], len & DNAME_MAX, name) < 0)
		return 0;
	s->path[at & PATH_MASK] = '/';
	WALK_OFF(s) = at;
	return 1;
}

/* The executed file's path as `/proc/<pid>/exe` shows it to a reader whose root is its mount
 * namespace's root (the sensor on the host): the walk d_path makes, from the file's dentry up
 * through d_parent to its mount's root, then from the mount to the dentry it is mounted on in
 * its parent mount, until a mount that is its own parent (the namespace's root). For a
 * container's process that is the path in the container's mount tree. Written backwards into
 * `s->path`, from WALK_OFF(s) to PATH_BYTES, with the FLAG_PATH_* flags set in `r->flags`.
 * Bounded by PATH_DEPTH steps and PATH_BYTES bytes; past either the path is flagged
 * truncated, never sent as if whole. The kernel's rename and mount seqlocks are not taken (a
 * tracepoint cannot), so a rename racing the exec can show either name, as for any reader.
 */
static __always_inline void exe_path(struct exec_scratch *s, struct file *f)
{
	struct exec_record *r = &s->r;
	WALK_OFF(s) = PATH_BYTES;
	struct dentry *d = BPF_CORE_READ(f, f_path.dentry);
	struct vfsmount *vfs = BPF_CORE_READ(f, f_path.mnt);
	struct mount *mnt = (void *)vfs - bpf_core_field_offset(struct mount, mnt);
	struct dentry *root = BPF_CORE_READ(vfs, mnt_root);
	struct dentry *parent = BPF_CORE_READ(d, d_parent);

	const struct dentry_operations *ops = BPF_CORE_READ(d, d_op);
	if (ops && BPF_CORE_READ(ops, d_dname) && (d != parent || d != root)) {
		r->flags |= FLAG_PATH_PSEUDO;
		if (!prepend(s, &d->d_name))
			r->flags |= FLAG_PATH_TRUNCATED;
		return;
	}
	/* d_unlinked(): unhashed, and not a root. */
	if (!BPF_CORE_READ(d, d_hash.pprev) && d != parent)
		r->flags |= FLAG_PATH_DELETED;

	for (int i = 0; i < PATH_DEPTH; i++) {
		parent = BPF_CORE_READ(d, d_parent);
		if (d == root) {
			struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
			if (up == mnt)
				return;
			d = BPF_CORE_READ(mnt, mnt_mountpoint);
			mnt = up;
			root = BPF_CORE_READ(mnt, mnt.mnt_root);
			continue;
		}
		if (d == parent) {
			r->flags |= FLAG_PATH_UNREACHABLE;
			return;
		}
		if (!prepend(s, &d->d_name))
			break;
		d = parent;
	}
	r->flags |= FLAG_PATH_TRUNCATED;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *p, int old_pid, struct linux_binprm *bprm)
{
	u32 cpu = bpf_get_smp_processor_id();
	struct exec_scratch *s = bpf_map_lookup_elem(&scratch, &cpu);
	if (!s) {
		count_loss();
		return 0;
	}
	struct exec_record *r = &s->r;
	r->kind = KIND_EXEC;
	r->flags = 0;
	/* CLOCK_MONOTONIC, the proc connector's clock: both backends order events alike. */
	r->ktime = bpf_ktime_get_ns();
	r->pid = BPF_CORE_READ(p, pid);
	r->tgid = BPF_CORE_READ(p, tgid);
	r->ppid = BPF_CORE_READ(p, real_parent, tgid);
	r->uid = BPF_CORE_READ(p, real_cred, uid.val);
	r->gid = BPF_CORE_READ(p, real_cred, gid.val);
	r->start_boottime = BPF_CORE_READ(p, start_boottime);
	/* The tracepoint runs in the exec'ing task: "current" is p. */
	r->cgroup_id = bpf_get_current_cgroup_id();
	BPF_CORE_READ_STR_INTO(&r->comm, p, comm);

	struct file *f = BPF_CORE_READ(bprm, file);
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	r->exe_ino = BPF_CORE_READ(ino, i_ino);
	r->exe_dev = BPF_CORE_READ(ino, i_sb, s_dev);
	r->exe_magic = BPF_CORE_READ(ino, i_sb, s_magic);
	r->exe_nlink = BPF_CORE_READ(ino, i_nlink);
	const unsigned char *dname = BPF_CORE_READ(f, f_path.dentry, d_name.name);
	if (bpf_probe_read_kernel_str(r->name, sizeof(r->name), dname) < 0)
		r->name[0] = 0;
	/* The path goes first in the record's variable part, argv after it. */
	exe_path(s, f);
	u32 from = WALK_OFF(s);
	if (from >= PATH_BYTES) {
		/* Nothing written: the namespace's root itself ("/"), or a walk that wrote no name
		 * (flagged). */
		from = PATH_BYTES - 1;
		s->path[PATH_BYTES - 1] = '/';
	}
	u32 path_len = (PATH_BYTES - from) & (2 * PATH_BYTES - 1);
	if (bpf_probe_read_kernel(s->var, path_len, &s->path[from & PATH_MASK]) < 0) {
		path_len = 0;
		r->flags |= FLAG_PATH_TRUNCATED;
	}
	r->path_len = path_len;
	r->mnt_ns = BPF_CORE_READ(p, nsproxy, mnt_ns, ns.inum);

	const char *filename = BPF_CORE_READ(bprm, filename);
	long n = bpf_probe_read_kernel_str(r->filename, sizeof(r->filename), filename);
	if (n < 0)
		n = 0;
	r->filename_len = n;
	if (n == NAME_BYTES)
		r->flags |= FLAG_FILENAME_TRUNCATED;

	/* argv from the new image's initial stack, which exec itself just wrote (present, no
	 * fault): argc, then the argument pointers. Each argument is read on its own, bounded. */
	int argc = BPF_CORE_READ(bprm, argc);
	r->argc = argc;
	if (argc > MAX_ARGS)
		r->flags |= FLAG_ARGV_TRUNCATED;
	unsigned long stack = BPF_CORE_READ(p, mm, start_stack);
	u32 off = path_len;
	for (int i = 0; i < MAX_ARGS && i < argc; i++) {
		unsigned long arg = 0;
		if (bpf_probe_read_user(&arg, sizeof(arg), (void *)(stack + 8 + 8 * i)) < 0)
			break;
		long got = bpf_probe_read_user_str(&s->var[off & ARGV_MASK], ARG_READ, (void *)arg);
		if (got <= 0)
			break;
		off += got;
	}
	r->argv_len = (off - path_len) & ARGV_MASK;
	u64 size = sizeof(*r) + (off & ARGV_MASK);
	if (bpf_ringbuf_output(&events, s, size, wake_flags(size)) < 0)
		count_loss();
	return 0;
}

static __always_inline void task_event(u32 kind, struct task_struct *t)
{
	struct task_record *r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		count_loss();
		return;
	}
	r->kind = kind;
	r->flags = 0;
	r->ktime = bpf_ktime_get_ns();
	r->pid = BPF_CORE_READ(t, pid);
	r->tgid = BPF_CORE_READ(t, tgid);
	r->ppid = BPF_CORE_READ(t, real_parent, tgid);
	r->pad = 0;
	r->start_boottime = BPF_CORE_READ(t, start_boottime);
	bpf_ringbuf_submit(r, wake_flags(sizeof(*r)));
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	/* A new thread is not a new process: it shares its process's entry. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	task_event(KIND_FORK, child);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *p)
{
	if (BPF_CORE_READ(p, pid) != BPF_CORE_READ(p, tgid))
		return 0;
	task_event(KIND_EXIT, p);
	return 0;
}
