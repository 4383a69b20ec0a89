/* joinexec: start one process inside a running container, for Berth's monitor.
 *
 * The monitor (runtime/init.py spawn_exec, plan encoded by runtime/joinexec.py) starts this
 * with posix_spawn; joinexec.h gives the fd layout and arguments, which joinexec_plan.c
 * decodes into a struct plan, and this file takes the steps that join the container. Our
 * own environment is empty (posix_spawn gets none), so nothing the exec request carries
 * (GLIBC_TUNABLES, ...) reaches this root process's libc.
 *
 * Why C and not the monitor's fork: forking the ~21 MiB Python monitor copied its page tables,
 * took copy-on-write faults in the child, and execve then tore that address space down while
 * the monitor waited for the status pipe's EOF; posix_spawn (vfork + exec) of this small
 * static binary does none of that.
 *
 * The steps and their order are those the Python child took (runtime/initchild.py), and the
 * same CVEs constrain them:
 * - CVE-2019-5736 (a container overwriting the runtime through /proc/<pid>/exe): we make
 *   ourselves non-dumpable first, before joining any namespace, so only CAP_SYS_PTRACE in the
 *   host user namespace can open our exe or fds; until the caps drop, commoncap also refuses
 *   any process whose permitted set is not a superset of ours. execve of the container's
 *   binary replaces us; nothing in the container ever execs this file.
 * - CVE-2024-21626 (a host fd surviving into the container, e.g. as cwd): every fd beyond the
 *   layout above is closed at start, the rest is marked close-on-exec just before execve, and
 *   the cwd is checked with getcwd() (ENOENT when it is not below our root).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "joinexec.h"

#ifndef BERTH_STAMP
#define BERTH_STAMP "unstamped"
#endif
/* runtime/joinexec.py finds this in the installed file to tell a stale build from ours */
__attribute__((used)) static const char stamp[] = "berth-joinexec:" BERTH_STAMP;

#define PASSWD_MAX (1 << 20)

static void load_seccomp(struct sock_fprog *prog)
{
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) != 0)
        fail("seccomp: %s", strerror(errno));
}

static void write_file(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, text, strlen(text)) < 0)
        fail("%s: %s", strerror(errno), path);
    close(fd);
}

/* Never below the current value: lowering needs CAP_SYS_RESOURCE (spec.write_oom_score_adj). */
static void write_oom(long long value)
{
    const char *path = "/proc/self/oom_score_adj";
    char buf[32];
    int fd = open(path, O_RDWR | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n < 0)
        fail("%s: %s", strerror(errno), path);
    buf[n] = '\0';
    long long current = atoll(buf);
    int len = snprintf(buf, sizeof buf, "%lld", value > current ? value : current);
    if (lseek(fd, 0, SEEK_SET) < 0 || write(fd, buf, (size_t)len) < 0)
        fail("%s: %s", strerror(errno), path);
    close(fd);
}

static void cap_prctl(int option, unsigned long arg)
{
    if (prctl(option, arg, 0, 0, 0) < 0)
        fail("prctl(%d, %lu): %s", option, arg, strerror(errno));
}

/* The uid's home in the container's /etc/passwd (we are in its root by now), "/" without one,
 * as runc sets HOME. Non-blocking, regular files only and never our terminal: the image owns
 * that path and could make it a FIFO or a tty. */
static char *home_of(uid_t uid)
{
    static char buf[PASSWD_MAX + 1];
    int fd = open("/etc/passwd", O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0)
        return "/";
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return "/";
    }
    ssize_t n = read(fd, buf, PASSWD_MAX);
    close(fd);
    if (n <= 0)
        return "/";
    buf[n] = '\0';
    char want[24];
    snprintf(want, sizeof want, "%u", (unsigned)uid);
    for (char *line = buf, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *f[7] = {0};
        int nf = 0;
        for (char *s = line; nf < 7; nf++) {
            f[nf] = s;
            s = strchr(s, ':');
            if (!s) {
                nf++;
                break;
            }
            *s++ = '\0';
        }
        if (nf >= 6 && !strcmp(f[2], want) && *f[5])
            return f[5];
    }
    return "/";
}

static void set_home(struct plan *p)
{
    const char *home = home_of(p->uid);
    char *entry = malloc(strlen(home) + 6);
    if (!entry)
        fail("joinexec: out of memory");
    strcpy(entry, "HOME=");
    strcat(entry, home);
    p->env[p->nenv++] = entry;
}

static int executable(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* PATH lookup inside the container, with the error texts of spec.lookup_executable. */
static char *lookup(const char *arg0, const char *path_var)
{
    struct stat st;
    if (strchr(arg0, '/')) {
        if (stat(arg0, &st) != 0)
            fail("exec: %s: no such file or directory", arg0);
        return (char *)arg0;
    }
    const char *dir = path_var;
    for (;;) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        char *cand = malloc(dlen + strlen(arg0) + 3);
        if (!cand)
            fail("joinexec: out of memory");
        if (dlen == 0)
            strcpy(cand, ".");
        else
            memcpy(cand, dir, dlen), cand[dlen] = '\0';
        if (cand[strlen(cand) - 1] != '/')
            strcat(cand, "/");
        strcat(cand, arg0);
        if (executable(cand))
            return cand;
        free(cand);
        if (!*end)
            break;
        dir = end + 1;
    }
    fail("exec: \"%s\": executable file not found in $PATH", arg0);
}

static void set_user(struct plan *p)
{
    if (setgroups(p->ngroups, p->groups) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0)
        fail("set user %u:%u: %s", (unsigned)p->uid, (unsigned)p->gid, strerror(errno));
}

static void set_caps(struct plan *p)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = (__u32)(p->effective >> (32 * i));
        data[i].permitted = (__u32)(p->permitted >> (32 * i));
        data[i].inheritable = (__u32)(p->inheritable >> (32 * i));
    }
    if (syscall(SYS_capset, &hdr, data) != 0)
        fail("capset: %s", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0)
        fail("prctl(%d, %d): %s", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, strerror(errno));
    for (int cap = 0; cap <= p->last_cap; cap++)
        if (p->ambient >> cap & 1 &&
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            fail("prctl(%d, %d): %s", PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, strerror(errno));
}

int main(int argc, char **argv)
{
    static struct plan p; /* 256 KiB of groups: off the stack */
    struct sock_fprog prog = {0};
    /* first, before anything can see us from a container: hide our exe and fds */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    parse(argc, argv, &p);
    if (close_range(NS_FD_BASE + (unsigned)p.nns, ~0U, 0) < 0)
        fail("close_range: %s", strerror(errno));
    if (p.seccomp_len)
        read_bpf(&p, &prog);
    else
        close(SECCOMP_FD); /* not ours: an inheritable fd 4 of the monitor's */
    if (p.tty && ioctl(0, TIOCSCTTY, 0) < 0)
        fail("terminal: stdin cannot be our tty: %s", strerror(errno));

    /* cgroup first, then oom_score_adj before a user ns join hides our /proc/self from us */
    for (int i = 0; i < p.ncgroups; i++)
        write_file(p.cgroup[i], "0");
    if (p.oom != OOM_UNSET)
        write_oom(p.oom);
    for (int i = 0; i < p.nns; i++) {
        if (setns(NS_FD_BASE + i, p.ns_flag[i]) < 0)
            fail("join %s namespace: %s", p.ns_name[i], strerror(errno));
        close(NS_FD_BASE + i);
    }
    if (chdir("/") < 0) /* setns(mnt) left the cwd undefined; "/" is the container's root now */
        fail("%s: /", strerror(errno));
    for (int i = 0; i < p.nrlimits; i++)
        if (setrlimit(p.rlimits[i].resource, &p.rlimits[i].value) < 0)
            fail("setrlimit %s: %s", p.rlimits[i].name, strerror(errno));
    umask(p.umask);

    /* privileges, in the order the kernel allows; a filter without no_new_privs needs
     * CAP_SYS_ADMIN, so it goes in now, else last */
    if (p.nnp) {
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
            fail("prctl(PR_SET_NO_NEW_PRIVS): %s", strerror(errno));
    } else if (p.seccomp_len) {
        load_seccomp(&prog);
    }
    for (int cap = 0; cap <= p.last_cap; cap++)
        if (!(p.bounding >> cap & 1) && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1)
            cap_prctl(PR_CAPBSET_DROP, (unsigned long)cap);
    cap_prctl(PR_SET_KEEPCAPS, 1);
    if (p.home) /* read while still root: passwd may be 0600 */
        set_home(&p);
    set_user(&p);
    cap_prctl(PR_SET_KEEPCAPS, 0);
    set_caps(&p);
    prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0); /* the credential change cleared it */
    char *cwd = NULL;
    if (chdir(p.cwd) < 0 || !(cwd = getcwd(NULL, 0)))
        fail("chdir %s: %s", p.cwd, strerror(errno));
    free(cwd);
    char *path = lookup(p.args[0], p.path);
    if (close_range(STATUS_FD, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        fail("close_range: %s", strerror(errno));
    if (p.nnp && p.seccomp_len)
        load_seccomp(&prog);
    execve(path, p.args, p.env);
    char err[128];
    snprintf(err, sizeof err, "%s", strerror(errno));
    for (char *c = err; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    fail("exec: %s: %s", path, err);
}
