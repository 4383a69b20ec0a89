/* joinexec_plan.c: the helper's input, read into a struct plan (protocol in joinexec.h).
 *
 * It only checks and decodes what the monitor sent: main() parses before it joins, limits
 * or changes anything, so a malformed request fails with no namespace, cgroup or
 * credential touched.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "joinexec.h"

/* The monitor raises InitError with the line. */
void fail(const char *fmt, ...)
{
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof buf)
        n = sizeof buf - 1;
    (void)!write(STATUS_FD, buf, (size_t)n);
    _exit(127);
}

static long long number(const char *s, int base, const char *what)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, base);
    if (errno || end == s || *end)
        fail("joinexec: bad %s: %s", what, s);
    return v;
}

/* strtoull takes "-1" as 2^64-1: demand digits only */
static unsigned long long unumber(const char *s, int base, const char *what)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, base);
    if (errno || end == s || *end || *s == '-' || *s == '+' || *s == ' ')
        fail("joinexec: bad %s: %s", what, s);
    return v;
}

/* Split s at the next ':' (in place); fail when there is none. */
static char *field(char **s, const char *what)
{
    char *start = *s, *colon = strchr(start, ':');
    if (!colon)
        fail("joinexec: bad %s", what);
    *colon = '\0';
    *s = colon + 1;
    return start;
}

void parse(int argc, char **argv, struct plan *p)
{
    int i = 1, env_count = -1;
    p->oom = OOM_UNSET;
    p->last_cap = -1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        char *key = argv[i], *val = strchr(key, '=');
        if (!val)
            fail("joinexec: bad argument %s", key);
        *val++ = '\0';
        if (!strcmp(key, "ns")) {
            if (p->nns == MAX_NS)
                fail("joinexec: too many namespaces");
            p->ns_name[p->nns] = field(&val, "ns");
            p->ns_flag[p->nns++] = (int)number(val, 10, "ns flag");
        } else if (!strcmp(key, "cgroup")) {
            if (p->ncgroups == MAX_CGROUPS)
                fail("joinexec: too many cgroup files");
            p->cgroup[p->ncgroups++] = val;
        } else if (!strcmp(key, "oom")) {
            p->oom = number(val, 10, "oom");
        } else if (!strcmp(key, "rlimit")) {
            if (p->nrlimits == MAX_RLIMITS)
                fail("joinexec: too many rlimits");
            struct rlim *r = &p->rlimits[p->nrlimits++];
            r->name = field(&val, "rlimit");
            r->resource = (int)number(field(&val, "rlimit"), 10, "rlimit");
            r->value.rlim_cur = unumber(field(&val, "rlimit"), 10, "rlimit");
            r->value.rlim_max = unumber(val, 10, "rlimit");
        } else if (!strcmp(key, "umask")) {
            p->umask = (mode_t)unumber(val, 8, "umask");
        } else if (!strcmp(key, "tty")) {
            p->tty = (int)number(val, 10, "tty");
        } else if (!strcmp(key, "nnp")) {
            p->nnp = (int)number(val, 10, "nnp");
        } else if (!strcmp(key, "home")) {
            p->home = (int)number(val, 10, "home");
        } else if (!strcmp(key, "seccomp")) {
            p->seccomp_len = number(val, 10, "seccomp");
        } else if (!strcmp(key, "lastcap")) {
            p->last_cap = (int)number(val, 10, "lastcap");
        } else if (!strcmp(key, "bounding")) {
            p->bounding = unumber(val, 16, "bounding");
        } else if (!strcmp(key, "effective")) {
            p->effective = unumber(val, 16, "effective");
        } else if (!strcmp(key, "permitted")) {
            p->permitted = unumber(val, 16, "permitted");
        } else if (!strcmp(key, "inheritable")) {
            p->inheritable = unumber(val, 16, "inheritable");
        } else if (!strcmp(key, "ambient")) {
            p->ambient = unumber(val, 16, "ambient");
        } else if (!strcmp(key, "uid")) {
            p->uid = (uid_t)unumber(val, 10, "uid");
            p->has_uid = 1;
        } else if (!strcmp(key, "gid")) {
            p->gid = (gid_t)unumber(val, 10, "gid");
            p->has_gid = 1;
        } else if (!strcmp(key, "group")) {
            if (p->ngroups == MAX_GROUPS)
                fail("joinexec: too many groups");
            p->groups[p->ngroups++] = (gid_t)unumber(val, 10, "group");
        } else if (!strcmp(key, "path")) {
            p->path = val;
        } else if (!strcmp(key, "cwd")) {
            p->cwd = val;
        } else if (!strcmp(key, "env")) {
            env_count = (int)number(val, 10, "env");
        } else {
            fail("joinexec: unknown argument %s", key);
        }
    }
    /* every required option present, the env count fits, and at least one arg follows it */
    if (i >= argc || env_count < 0 || env_count > argc - i - 2 || !p->path || !p->cwd ||
        p->last_cap < 0 || p->last_cap > 63 || !p->has_uid || !p->has_gid ||
        p->seccomp_len < 0 || p->seccomp_len > MAX_BPF || p->seccomp_len % 8)
        fail("joinexec: incomplete arguments");
    i++;
    p->nenv = env_count;
    p->env = calloc((size_t)env_count + 2, sizeof *p->env);
    if (!p->env)
        fail("joinexec: out of memory");
    memcpy(p->env, argv + i, (size_t)env_count * sizeof *p->env);
    p->args = argv + i + env_count;
}

void read_bpf(struct plan *p, struct sock_fprog *prog)
{
    size_t len = (size_t)p->seccomp_len, got = 0;
    unsigned char *buf = malloc(len);
    if (!buf)
        fail("joinexec: out of memory");
    while (got < len) {
        ssize_t n = read(SECCOMP_FD, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            fail("seccomp: short program (%zu of %zu bytes)", got, len);
        got += (size_t)n;
    }
    close(SECCOMP_FD);
    prog->len = (unsigned short)(len / 8);
    prog->filter = (struct sock_filter *)buf;
}

