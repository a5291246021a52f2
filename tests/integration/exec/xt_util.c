/* xt_util.c - helpers of the exec integration tests: servers, requests, replies, /proc scans. */
#include "xt_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* CHECK is wanted here; check.h's pass counter belongs to the test binaries, not to this helper. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-variable"
#include "check.h"
#pragma GCC diagnostic pop
#include "sockgate/error.h"
#include "sockgate/net.h"

#define MAX_SERVERS 8
#define MAX_BODY (64u * 1024u * 1024u)

extern char **environ;

static struct sg_proc *servers[MAX_SERVERS];
static int nservers;

/* After a failed check: SIGTERM first, so each server still kills the commands it runs. */
static void kill_servers(void)
{
    for (int i = 0; i < nservers; i++)
        if (servers[i]->pid > 0)
            sg_proc_stop(servers[i], 5000);
}

void xt_start(struct sg_proc *p, const char *const extra[])
{
    const char *argv[48] = {"sockgate-exec", "--listen", "127.0.0.1:0"};
    int n = 3;
    for (int i = 0; extra && extra[i] && n < 47; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    CHECK(sg_proc_start(p, argv, 10000) == 0);
    if (nservers == 0)
        atexit(kill_servers);
    CHECK(nservers < MAX_SERVERS);
    servers[nservers++] = p;
}

void xt_stop(struct sg_proc *p)
{
    CHECK_INT_EQ(sg_proc_stop(p, 10000), 0);
}

void xt_connect(struct xt_conn *c, const struct sg_proc *p)
{
    struct sg_addr addr;
    char err[256];
    CHECK(sg_addr_parse(p->addr, &addr, err, sizeof err) == SG_OK);
    CHECK(sg_connect(&addr, SOCK_STREAM, 5000, &c->fd, err, sizeof err) == SG_OK);
    c->reader = malloc(sizeof *c->reader);
    CHECK(c->reader != NULL);
    sg_frame_reader_init(c->reader, c->fd, 0);
}

void xt_close(struct xt_conn *c)
{
    if (c->reader) {
        sg_frame_reader_free(c->reader);
        free(c->reader);
        c->reader = NULL;
    }
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

void xt_send_raw(struct xt_conn *c, const void *buf, size_t len)
{
    CHECK_INT_EQ(sg_write_all(c->fd, buf, len, sg_now_ms() + 10000), SG_OK);
}

void xt_send_frame(struct xt_conn *c, const json_t *hdr, const void *body, size_t len)
{
    CHECK_INT_EQ(sg_frame_send(c->fd, hdr, body, len, sg_now_ms() + 30000), SG_OK);
}

void xt_send_exec(struct xt_conn *c, const char *const argv[], const void *body, size_t len)
{
    json_t *hdr = json_pack("{s:s, s:[]}", "op", "exec", "argv");
    CHECK(hdr != NULL);
    for (int i = 0; argv[i]; i++)
        CHECK(json_array_append_new(json_object_get(hdr, "argv"), json_string(argv[i])) == 0);
    if (len > 0)
        json_object_set_new(hdr, "total_size", json_integer((json_int_t)len));
    xt_send_frame(c, hdr, body, len);
    json_decref(hdr);
}

int xt_read(struct xt_conn *c, struct xt_reply *r, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    memset(r, 0, sizeof *r);
    for (;;) {
        enum sg_frame_event ev;
        const uint8_t *chunk;
        size_t len;
        int rc = sg_frame_reader_next(c->reader, &ev, &chunk, &len, deadline);
        if (rc != SG_OK) {
            xt_reply_free(r);
            return rc;
        }
        if (ev == SG_FRAME_HEADER) {
            uint64_t size = sg_frame_decoder_body_size(&c->reader->dec);
            CHECK(size <= MAX_BODY);
            r->hdr = json_incref(sg_frame_decoder_header(&c->reader->dec));
            r->body = malloc(size + 1);
            CHECK(r->body != NULL);
        } else if (ev == SG_FRAME_BODY) {
            memcpy(r->body + r->len, chunk, len);
            r->len += len;
        } else if (ev == SG_FRAME_END) {
            r->body[r->len] = '\0';
            return SG_OK;
        }
    }
}

void xt_reply_free(struct xt_reply *r)
{
    json_decref(r->hdr);
    free(r->body);
    memset(r, 0, sizeof *r);
}

void xt_exec(const struct sg_proc *p, const char *const argv[], const void *body, size_t len, struct xt_reply *r)
{
    struct xt_conn c;
    xt_connect(&c, p);
    xt_send_exec(&c, argv, body, len);
    CHECK_INT_EQ(xt_read(&c, r, 60000), SG_OK);
    xt_close(&c);
}

long long xt_int(const struct xt_reply *r, const char *key)
{
    const json_t *v = json_object_get(r->hdr, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : -9999;
}

int xt_true(const struct xt_reply *r, const char *key)
{
    return json_is_true(json_object_get(r->hdr, key));
}

const char *xt_err_code(const struct xt_reply *r)
{
    return json_string_value(json_object_get(json_object_get(r->hdr, "error"), "code"));
}

void xt_check_stdout(const struct xt_reply *r, const char *expect)
{
    size_t n = strlen(expect);
    if (xt_err_code(r) || xt_int(r, "stdout_size") != (long long)n || r->len != n ||
        memcmp(r->body, expect, n) != 0) {
        char *h = json_dumps(r->hdr, JSON_COMPACT);
        fprintf(stderr, "expected stdout \"%s\", got header %s body \"%s\"\n", expect, h ? h : "?",
                r->body ? (char *)r->body : "");
        free(h);
        CHECK(!"stdout as expected");
    }
    CHECK_INT_EQ(xt_int(r, "exit_code"), 0);
}

/* Appends what fd has to *buf; returns 0 on EOF, 1 when more may come. */
static int collect(int fd, char **buf, size_t *len)
{
    char tmp[65536];
    ssize_t n = read(fd, tmp, sizeof tmp);
    if (n <= 0)
        return n < 0 && errno == EINTR;
    *buf = realloc(*buf, *len + (size_t)n + 1);
    CHECK(*buf != NULL);
    memcpy(*buf + *len, tmp, (size_t)n);
    *len += (size_t)n;
    (*buf)[*len] = '\0';
    return 1;
}

int xt_run(const char *const argv[], const void *in, size_t inlen, int timeout_ms, struct xt_run_result *r)
{
    int ip[2], op[2], ep[2], status = 0, open_out = 1, open_err = 1;
    size_t sent = 0;
    int64_t deadline = sg_now_ms() + timeout_ms;
    posix_spawn_file_actions_t fa;
    pid_t pid;

    memset(r, 0, sizeof *r);
    r->out = calloc(1, 1);
    r->err = calloc(1, 1);
    CHECK(pipe2(ip, O_CLOEXEC) == 0 && pipe2(op, O_CLOEXEC) == 0 && pipe2(ep, O_CLOEXEC) == 0);
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ip[0], 0);
    posix_spawn_file_actions_adddup2(&fa, op[1], 1);
    posix_spawn_file_actions_adddup2(&fa, ep[1], 2);
    if (posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ) != 0) {
        posix_spawn_file_actions_destroy(&fa);
        r->status = -1;
        return -1;
    }
    posix_spawn_file_actions_destroy(&fa);
    close(ip[0]);
    close(op[1]);
    close(ep[1]);
    fcntl(ip[1], F_SETFL, O_NONBLOCK);
    if (inlen == 0) {
        close(ip[1]);
        ip[1] = -1;
    }
    while (open_out || open_err) {
        struct pollfd p[3] = {{.fd = open_out ? op[0] : -1, .events = POLLIN},
                              {.fd = open_err ? ep[0] : -1, .events = POLLIN},
                              {.fd = ip[1], .events = POLLOUT}};
        int64_t left = deadline - sg_now_ms();
        if (left <= 0) {
            kill(pid, SIGKILL);
            break;
        }
        if (poll(p, 3, (int)left) < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            open_out = collect(op[0], &r->out, &r->out_len);
        if (p[1].revents)
            open_err = collect(ep[0], &r->err, &r->err_len);
        if (ip[1] >= 0 && p[2].revents) {
            ssize_t n = write(ip[1], (const char *)in + sent, inlen - sent);
            if (n > 0)
                sent += (size_t)n;
            if ((n < 0 && errno != EAGAIN) || sent == inlen) {
                close(ip[1]);
                ip[1] = -1;
            }
        }
    }
    if (ip[1] >= 0)
        close(ip[1]);
    close(op[0]);
    close(ep[0]);
    waitpid(pid, &status, 0);
    r->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return r->status;
}

void xt_run_free(struct xt_run_result *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

/* Reads the state, parent and start time of pid from /proc/PID/stat; returns 0 or -1 when it is gone. */
static int proc_stat_start(pid_t pid, char *state, pid_t *ppid, unsigned long long *start)
{
    char path[64], buf[1024], *close_paren;
    FILE *f;
    int ok;
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (!f)
        return -1;
    ok = fgets(buf, sizeof buf, f) != NULL;
    fclose(f);
    close_paren = ok ? strrchr(buf, ')') : NULL;
    if (!close_paren)
        return -1;
    int p = 0;
    /* Fields 3 and 4, then 19 skipped ones up to field 22, the start time in clock ticks. */
    if (sscanf(close_paren + 1, " %c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               state, &p, start) != 3)
        return -1;
    *ppid = p;
    return 0;
}

static int proc_stat(pid_t pid, char *state, pid_t *ppid)
{
    unsigned long long start;
    return proc_stat_start(pid, state, ppid, &start);
}

/* Calls fn for every process in /proc; stops early when fn returns nonzero and returns that value. */
static long each_proc(long (*fn)(pid_t pid, const void *ctx), const void *ctx)
{
    DIR *d = opendir("/proc");
    struct dirent *e;
    long r = 0;
    CHECK(d != NULL);
    while (r == 0 && (e = readdir(d)) != NULL) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end == '\0' && pid > 0)
            r = fn((pid_t)pid, ctx);
    }
    closedir(d);
    return r;
}

struct child_count {
    pid_t parent;
    int zombies_only;
    int *count;
};

static long count_child(pid_t pid, const void *ctx)
{
    const struct child_count *cc = ctx;
    char state;
    pid_t ppid;
    if (proc_stat(pid, &state, &ppid) == 0 && ppid == cc->parent && (!cc->zombies_only || state == 'Z'))
        (*cc->count)++;
    return 0;
}

int xt_zombies_of(pid_t parent)
{
    int n = 0;
    struct child_count cc = {parent, 1, &n};
    each_proc(count_child, &cc);
    return n;
}

int xt_children_of(pid_t parent)
{
    int n = 0;
    struct child_count cc = {parent, 0, &n};
    each_proc(count_child, &cc);
    return n;
}

static long match_arg(pid_t pid, const void *ctx)
{
    const char *arg = ctx;
    char path[64], buf[4096], state;
    pid_t ppid;
    ssize_t n;
    int fd;
    if (pid == getpid() || proc_stat(pid, &state, &ppid) != 0 || state == 'Z')
        return 0;
    snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    for (char *p = buf; p < buf + n; p += strlen(p) + 1)
        if (strcmp(p, arg) == 0)
            return pid;
    return 0;
}

pid_t xt_find_proc(const char *arg)
{
    return (pid_t)each_proc(match_arg, arg);
}

pid_t xt_wait_proc(const char *arg, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    do {
        pid_t pid = xt_find_proc(arg);
        if (pid > 0)
            return pid;
        usleep(10000);
    } while (sg_now_ms() < deadline);
    return 0;
}

int xt_wait_gone(const char *arg, int timeout_ms)
{
    int64_t deadline = sg_now_ms() + timeout_ms;
    do {
        if (xt_find_proc(arg) == 0)
            return 1;
        usleep(10000);
    } while (sg_now_ms() < deadline);
    return 0;
}

const char *xt_source_file(const char *name, char *buf, size_t buflen)
{
    const char *src = getenv("SOCKGATE_SOURCE_DIR");
    snprintf(buf, buflen, "%s/tests/integration/exec/%s", src ? src : ".", name);
    return buf;
}

struct child_list {
    pid_t parent;
    int n;
    pid_t pid[256];
    unsigned long long start[256];
};

static long list_child(pid_t pid, const void *ctx)
{
    struct child_list *l = (struct child_list *)ctx;
    unsigned long long start;
    char state;
    pid_t ppid;
    if (l->n < 256 && proc_stat_start(pid, &state, &ppid, &start) == 0 && ppid == l->parent) {
        l->pid[l->n] = pid;
        l->start[l->n] = start;
        l->n++;
    }
    return 0;
}

int xt_children_at_once(pid_t parent)
{
    struct child_list l = {.parent = parent, .n = 0};
    int overlapping = 0;
    each_proc(list_child, &l);
    /* Newest first: start time, then pid, both larger for a later child. */
    for (int i = 0; i < l.n; i++)
        for (int j = i + 1; j < l.n; j++)
            if (l.start[j] > l.start[i] || (l.start[j] == l.start[i] && l.pid[j] > l.pid[i])) {
                pid_t tp = l.pid[i];
                unsigned long long ts = l.start[i];
                l.pid[i] = l.pid[j];
                l.start[i] = l.start[j];
                l.pid[j] = tp;
                l.start[j] = ts;
            }
    for (int i = 0; i < l.n; i++) {
        unsigned long long start;
        char state;
        pid_t ppid;
        if (proc_stat_start(l.pid[i], &state, &ppid, &start) == 0 && ppid == parent && start == l.start[i])
            overlapping++;
    }
    return overlapping;
}
