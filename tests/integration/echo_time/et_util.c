/* et_util.c - sockets and child processes for the echo and time integration tests. */
#include "et_util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "harness.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

void et_start(struct sg_proc *p, const char *const argv[])
{
    /* The harness kills it at exit unless it was stopped. */
    CHECK(sg_proc_start(p, argv, 10000) == 0);
}

static int connect_port(uint16_t port, int type)
{
    struct sg_addr a;
    char text[32], err[256];
    int fd = -1;
    snprintf(text, sizeof text, "127.0.0.1:%u", port);
    CHECK(sg_addr_parse(text, &a, err, sizeof err) == SG_OK);
    if (sg_connect(&a, type, 5000, &fd, err, sizeof err) != SG_OK) {
        fprintf(stderr, "connect %s: %s\n", text, err);
        CHECK(fd >= 0);
    }
    return fd;
}

int et_tcp_connect(uint16_t port)
{
    return connect_port(port, SOCK_STREAM);
}

int et_udp_connect(uint16_t port)
{
    return connect_port(port, SOCK_DGRAM);
}

void et_expect_reply(int fd, const char *msg, const char *expect)
{
    size_t len = strlen(msg);
    char *got = calloc(1, len + 1);
    CHECK(got != NULL);
    CHECK(strlen(expect) == len);
    CHECK(sg_write_all(fd, msg, len, sg_deadline_after(10000)) == SG_OK);
    CHECK(sg_read_full(fd, got, len, sg_deadline_after(10000)) == SG_OK);
    if (strcmp(got, expect) != 0)
        fprintf(stderr, "got \"%s\", expected \"%s\"\n", got, expect);
    CHECK(strcmp(got, expect) == 0);
    free(got);
}

long et_udp_ask(int fd, const void *msg, size_t len, void *reply, size_t cap)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        ssize_t n;
        CHECK(send(fd, msg, len, 0) == (ssize_t)len);
        if (sg_wait_fd(fd, POLLIN, sg_deadline_after(2000)) != SG_OK)
            continue;
        n = recv(fd, reply, cap, 0);
        if (n >= 0)
            return (long)n;
    }
    return -1;
}

int et_wait_closed(int fd, int timeout_ms)
{
    int64_t deadline = sg_deadline_after(timeout_ms);
    char buf[4096];
    for (;;) {
        ssize_t n;
        if (sg_wait_fd(fd, POLLIN, deadline) != SG_OK)
            return 0;
        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
            return 1;
    }
}

/* Reads a whole temporary file into buf (cap bytes, NUL-terminated); returns its length. */
static size_t slurp(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    ssize_t n;
    lseek(fd, 0, SEEK_SET);
    while (len + 1 < cap && (n = read(fd, buf + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return len;
}

static int temp_file(void)
{
    char tmpl[] = "/tmp/sockgate-et-XXXXXX";
    int fd = mkstemp(tmpl);
    CHECK(fd >= 0);
    unlink(tmpl);
    return fd;
}

int et_run(const char *const argv[], const char *stdin_text, const char *const env[], int timeout_ms,
           struct et_run_result *r)
{
    int in = temp_file(), out = temp_file(), err = temp_file(), status = 0;
    int64_t deadline = sg_deadline_after(timeout_ms);
    pid_t pid;

    memset(r, 0, sizeof *r);
    if (stdin_text)
        CHECK(sg_write_all(in, stdin_text, strlen(stdin_text), -1) == SG_OK);
    lseek(in, 0, SEEK_SET);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        for (int i = 0; env && env[i]; i++)
            putenv((char *)env[i]);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    for (;;) {
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid)
            break;
        if (sg_now_ms() >= deadline) {
            fprintf(stderr, "%s ran over %d ms; killing it\n", argv[0], timeout_ms);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        usleep(5 * 1000);
    }
    r->status = WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
    r->out_len = slurp(out, r->out, sizeof r->out);
    slurp(err, r->err, sizeof r->err);
    close(in);
    close(out);
    close(err);
    return r->status;
}

const char *et_source_file(const char *name, char *buf, size_t buflen)
{
    const char *dir = getenv("SOCKGATE_SOURCE_DIR");
    snprintf(buf, buflen, "%s/tests/integration/echo_time/%s", dir ? dir : ".", name);
    return buf;
}

long et_raise_fd_limit(long want)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    }
    return (long)rl.rlim_cur;
}
