/* CNI plugin executable: hands this call (env, stdin/stdout/stderr, cwd, netns) to the warm plugin
 * server over a unix socket and exits with the plugin's code; execs the Python plugin directly
 * when no server answers. Built per plugin by cni_plugins/install.py, which defines
 * BERTH_PLUGIN, BERTH_MODULE, BERTH_PYTHON, BERTH_ROOT_LITERAL, BERTH_SOCKET, BERTH_AUTOSTART
 * and BERTH_IDLE. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_REQUEST 65536 /* the server rejects anything larger; we fall back before that */
#define PROTO "berth-cni/1"

extern char **environ;

static const char fallback_code[] = "import sys;sys.path.insert(0," BERTH_ROOT_LITERAL ");"
                                    "from cni_plugins." BERTH_MODULE " import main;"
                                    "sys.exit(main())";

static void exec_python(void) {
    char *argv[] = {BERTH_PYTHON, "-I", "-S", "-c", (char *)fallback_code, NULL};
    execv(BERTH_PYTHON, argv);
    fprintf(stderr, "%s: exec %s: %s\n", BERTH_PLUGIN, BERTH_PYTHON, strerror(errno));
    printf("{\"cniVersion\": \"1.0.0\", \"code\": 999, \"msg\": \"cannot start plugin\"}\n");
    exit(1);
}

/* Detached server (new session, stdio on /dev/null); its lock file keeps it to one per socket. */
static void autostart(const char *sock) {
    pid_t pid = fork();
    if (pid < 0)
        return;
    if (pid > 0) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return;
    }
    setsid();
    if (fork() != 0)
        _exit(0);
    int null = open("/dev/null", O_RDWR);
    for (int fd = 0; fd < 3; fd++)
        dup2(null, fd);
    if (chdir("/") != 0)
        _exit(1);
    char *argv[] = {BERTH_PYTHON, "-I", "-S", "-c",
                    "import sys;sys.path.insert(0," BERTH_ROOT_LITERAL ");"
                    "from cni_plugins.server import main;sys.exit(main())",
                    "--socket", (char *)sock, "--idle", BERTH_IDLE, NULL};
    char *envp[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
    execve(BERTH_PYTHON, argv, envp);
    _exit(1);
}

static int fd_open(int fd) { return fcntl(fd, F_GETFD) >= 0; }

/* NUL-separated: protocol, plugin, umask, then every environment entry. */
static size_t build_request(char *buf) {
    size_t n = 0;
    mode_t mask = umask(0);
    umask(mask);
    char mask_s[16];
    snprintf(mask_s, sizeof mask_s, "%o", (unsigned)mask);
    const char *head[] = {PROTO, BERTH_PLUGIN, mask_s};
    for (int i = 0; i < 3; i++) {
        size_t len = strlen(head[i]) + 1;
        memcpy(buf + n, head[i], len);
        n += len;
    }
    for (char **e = environ; *e; e++) {
        size_t len = strlen(*e) + 1;
        if (n + len > MAX_REQUEST)
            return 0;
        memcpy(buf + n, *e, len);
        n += len;
    }
    return n;
}

static int send_request(int sock, const char *buf, size_t len) {
    int fds[5] = {0, 1, 2, open(".", O_PATH | O_DIRECTORY | O_CLOEXEC),
                  open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC)};
    if (fds[3] < 0 || fds[4] < 0) {
        if (fds[3] >= 0)
            close(fds[3]);
        return -1;
    }
    char cbuf[CMSG_SPACE(sizeof fds)];
    memset(cbuf, 0, sizeof cbuf);
    struct iovec iov = {(void *)buf, len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                         .msg_controllen = sizeof cbuf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    ssize_t sent;
    while ((sent = sendmsg(sock, &msg, MSG_NOSIGNAL)) < 0 && errno == EINTR)
        ;
    close(fds[3]);
    close(fds[4]);
    return sent == (ssize_t)len ? 0 : -1;
}

int main(void) {
    static char buf[MAX_REQUEST];
    const char *path = getenv("BERTH_CNI_SOCKET");
    if (!path || !*path)
        path = BERTH_SOCKET;
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    size_t len = build_request(buf);
    if (len == 0 || strlen(path) >= sizeof addr.sun_path || !fd_open(0) || !fd_open(1) ||
        !fd_open(2))
        exec_python();
    strcpy(addr.sun_path, path);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock < 0)
        exec_python();
    if (connect(sock, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (BERTH_AUTOSTART && (errno == ENOENT || errno == ECONNREFUSED))
            autostart(path);
        exec_python();
    }
    if (send_request(sock, buf, len) != 0)
        exec_python(); /* nothing ran yet: the server only acts on a complete request */
    char reply[32];
    ssize_t got;
    while ((got = recv(sock, reply, sizeof reply - 1, 0)) < 0 && errno == EINTR)
        ;
    if (got < 0 && errno == ECONNRESET)
        exec_python(); /* no worker took the request (server stopping): nothing ran */
    if (got <= 0) {
        fprintf(stderr, "%s: plugin server worker ended without an exit code\n", BERTH_PLUGIN);
        printf("{\"cniVersion\": \"1.0.0\", \"code\": 999, \"msg\": \"plugin worker died\"}\n");
        return 1;
    }
    reply[got] = '\0';
    return atoi(reply);
}
