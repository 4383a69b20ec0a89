/* joinexec's plan: what the monitor hands the helper, shared by its two parts.
 *
 * joinexec_plan.c turns the argument list and the fd layout below into a struct plan (and
 * reports anything malformed on the status pipe); joinexec.c takes the steps that join the
 * container and exec the process. runtime/joinexec.py writes the arguments.
 *
 * The monitor starts the helper with posix_spawn, already in the container's pid namespace,
 * with a new session, default signal dispositions and this fixed fd layout:
 *   0-2  the process's stdio
 *   3    status pipe: one line of text on failure (then exit 127); EOF at a successful execve
 *   4    seccomp BPF program (seccomp=LEN bytes), only when a filter applies
 *   5..  one open /proc/<pid>/ns/<type> fd per ns=TYPE:FLAG argument, in that order
 * Arguments: KEY=VALUE options, "--", then env=N environment strings, then the process args.
 */
#ifndef BERTH_JOINEXEC_H
#define BERTH_JOINEXEC_H

#include <linux/filter.h>
#include <stddef.h>
#include <sys/resource.h>
#include <sys/types.h>

#define STATUS_FD 3
#define SECCOMP_FD 4
#define NS_FD_BASE 5
#define MAX_NS 8
#define MAX_CGROUPS 32
#define MAX_RLIMITS 32
#define MAX_GROUPS 65536 /* NGROUPS_MAX */
#define MAX_BPF (4096 * 8) /* BPF_MAXINSNS instructions of 8 bytes */

struct rlim {
    const char *name;
    int resource;
    struct rlimit value;
};

struct plan {
    const char *ns_name[MAX_NS];
    int ns_flag[MAX_NS];
    int nns;
    const char *cgroup[MAX_CGROUPS];
    int ncgroups;
    long long oom; /* -1000..1000, or OOM_UNSET */
    struct rlim rlimits[MAX_RLIMITS];
    int nrlimits;
    mode_t umask;
    int tty, nnp, home;
    long long seccomp_len;
    int last_cap;
    unsigned long long bounding, effective, permitted, inheritable, ambient;
    uid_t uid;
    gid_t gid;
    int has_uid, has_gid;
    gid_t groups[MAX_GROUPS];
    size_t ngroups;
    const char *path; /* the container's PATH for the lookup */
    const char *cwd;
    char **env;       /* argv slice plus room for HOME and the terminating NULL */
    int nenv;
    char **args;
};
#define OOM_UNSET (-100000)

/* One line for the monitor on the status pipe, then exit 127 as the Python child did. */
__attribute__((noreturn, format(printf, 1, 2))) void fail(const char *fmt, ...);
/* The arguments into p (strings point into argv); fails on anything malformed or missing. */
void parse(int argc, char **argv, struct plan *p);
/* The seccomp program of p->seccomp_len bytes from SECCOMP_FD, which is closed after. */
void read_bpf(struct plan *p, struct sock_fprog *prog);

#endif
