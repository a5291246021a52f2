/*
 * test_file_resume.c - `sockgate-cli put --resume` against the real
 * sockgate-file: an upload whose connection is cut (a relay that stops
 * forwarding and hangs up), or whose cli is SIGKILLed mid-transfer, or whose
 * server is SIGKILLed and restarted, continues from the server's offset when
 * the same command runs again, sending only the rest; the stored bytes are
 * the file's. A file changed in between starts over; an empty file works.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define MIB (1024u * 1024u)

static char dir[256], root[300], work[300], state[300];
static struct sg_proc server;

/* ---- a relay that forwards a connection until a byte budget is spent ---- */

/*
 * Accepts one connection on a loopback port and relays it to the server,
 * forwarding at most budget bytes from the client. When they are spent it
 * hangs up both sides (is_cut) or stops reading the client and waits for it
 * to die (else: the test kills the client). forwarded is written to pipe
 * done when the budget is spent.
 */
struct relay {
    int listen_fd;
    uint16_t port;
    uint16_t upstream;
    size_t budget;
    int is_cut;
    int done[2];
    pthread_t thread;
};

/* Writes all len bytes to fd; 0 or -1. */
static int put_all(int fd, const uint8_t *p, size_t len)
{
    return sg_write_all(fd, p, len, sg_now_ms() + 20000) == SG_OK ? 0 : -1;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    static uint8_t buf[256 * 1024];
    size_t forwarded = 0;
    int cfd = accept(r->listen_fd, NULL, NULL), sfd = -1;
    struct sg_addr a;
    char text[64], err[128];
    if (cfd < 0)
        return NULL;
    snprintf(text, sizeof text, "127.0.0.1:%u", (unsigned)r->upstream);
    if (sg_addr_parse(text, &a, err, sizeof err) != SG_OK || sg_connect(&a, SOCK_STREAM, 5000, &sfd, err, sizeof err) != SG_OK)
        goto out;
    while (forwarded < r->budget) {
        struct pollfd p[2] = {{.fd = cfd, .events = POLLIN}, {.fd = sfd, .events = POLLIN}};
        ssize_t n;
        if (poll(p, 2, 20000) <= 0)
            goto out;
        if (p[1].revents) {
            n = read(sfd, buf, sizeof buf);
            if (n <= 0 || put_all(cfd, buf, (size_t)n) != 0)
                goto out;
        }
        if (p[0].revents) {
            size_t want = r->budget - forwarded < sizeof buf ? r->budget - forwarded : sizeof buf;
            n = read(cfd, buf, want);
            if (n <= 0 || put_all(sfd, buf, (size_t)n) != 0)
                goto out;
            forwarded += (size_t)n;
        }
    }
    CHECK(write(r->done[1], &forwarded, sizeof forwarded) == (ssize_t)sizeof forwarded);
    if (!r->is_cut) {
        /* Stalled: nothing more goes through. The client is killed; its end of stream ends the relay. */
        for (;;) {
            ssize_t n = read(cfd, buf, sizeof buf);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
                break;
        }
    }
out:
    if (sfd >= 0)
        close(sfd);
    close(cfd);
    return NULL;
}

/* Starts a relay on 127.0.0.1:port (0: any) to the server at upstream. */
static void relay_start(struct relay *r, uint16_t port, uint16_t upstream, size_t budget, int is_cut)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    struct sg_addr a;
    char text[64], err[128];
    memset(r, 0, sizeof *r);
    r->upstream = upstream;
    r->budget = budget;
    r->is_cut = is_cut;
    CHECK(pipe(r->done) == 0);
    snprintf(text, sizeof text, "127.0.0.1:%u", (unsigned)port);
    CHECK(sg_addr_parse(text, &a, err, sizeof err) == SG_OK);
    CHECK(sg_listen(&a, SOCK_STREAM, &r->listen_fd, err, sizeof err) == SG_OK);
    CHECK(getsockname(r->listen_fd, (struct sockaddr *)&ss, &sl) == 0);
    r->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    /* sg_listen's socket is non-blocking: the relay's one accept should wait. */
    CHECK(fcntl(r->listen_fd, F_SETFL, 0) == 0);
    CHECK(pthread_create(&r->thread, NULL, relay_main, r) == 0);
}

/* Waits (at most 60 s) for the relay to have spent its budget. */
static void relay_wait_spent(struct relay *r)
{
    struct pollfd p = {.fd = r->done[0], .events = POLLIN};
    size_t forwarded;
    CHECK(poll(&p, 1, 60000) == 1);
    CHECK(read(r->done[0], &forwarded, sizeof forwarded) == (ssize_t)sizeof forwarded);
    CHECK_INT_EQ(forwarded, r->budget);
}

static void relay_end(struct relay *r)
{
    pthread_join(r->thread, NULL);
    close(r->listen_fd);
    close(r->done[0]);
    close(r->done[1]);
}

/* ---- helpers ---- */

/* Returns the contents of path as a NUL-terminated string (empty when missing); free it. */
static char *slurp(const char *path)
{
    size_t len;
    char *text = (char *)fc_read_file(path, &len);
    if (!text)
        return strdup("");
    text[len] = '\0';
    return text;
}

/* Starts `sockgate-cli put --resume --state-dir STATE --quiet 127.0.0.1:port FILE` with output into work/out, work/err. */
static pid_t put_start(uint16_t port, const char *file)
{
    char bin[512], target[64], out_path[400], err_path[400];
    pid_t pid;
    snprintf(target, sizeof target, "127.0.0.1:%u", (unsigned)port);
    snprintf(out_path, sizeof out_path, "%s/out", work);
    snprintf(err_path, sizeof err_path, "%s/err", work);
    sg_test_bin("sockgate-cli", bin, sizeof bin);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        const char *argv[] = {"sockgate-cli", "put", "--resume", "--state-dir", state, "--quiet", target, file, NULL};
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644), err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (out < 0 || err < 0)
            _exit(126);
        dup2(out, 1);
        dup2(err, 2);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    return pid;
}

/* Waits for pid; returns its exit status (128 + signal when killed). */
static int wait_exit(pid_t pid)
{
    int status = 0;
    while (waitpid(pid, &status, 0) < 0)
        CHECK(errno == EINTR);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* Runs put --resume to completion; stdout and stderr into *out and *err (free them). */
static int put_run(uint16_t port, const char *file, char **out, char **err)
{
    char path[400];
    int status = wait_exit(put_start(port, file));
    snprintf(path, sizeof path, "%s/out", work);
    *out = slurp(path);
    snprintf(path, sizeof path, "%s/err", work);
    *err = slurp(path);
    return status;
}

/* Returns the session id the state directory remembers (exactly one state file expected). */
static void remembered_session(char id[64])
{
    DIR *d = opendir(state);
    struct dirent *e;
    int n = 0;
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        char path[600];
        json_t *j;
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", state, e->d_name);
        j = json_load_file(path, 0, NULL);
        CHECK(json_is_string(json_object_get(j, "session")));
        snprintf(id, 64, "%s", json_string_value(json_object_get(j, "session")));
        json_decref(j);
        n++;
    }
    closedir(d);
    CHECK_INT_EQ(n, 1);
}

/* Returns the number of state files. */
static int state_files(void)
{
    return fc_count_prefix(state, "put-");
}

/*
 * Returns the offset of session id once no request holds it any more (an
 * empty append at the stat offset succeeds), waiting at most 20 s.
 */
static int64_t settled_offset(uint16_t port, const char *id)
{
    int64_t until = sg_now_ms() + 20000;
    for (;;) {
        struct fc_conn *c = fc_open(port);
        struct fc_resp r;
        int64_t off;
        fc_request(c, json_pack("{s:s, s:s}", "op", "session_stat", "session", id), NULL, 0, &r);
        CHECK(fc_error(&r) == NULL);
        off = fc_int(&r, "offset");
        fc_resp_free(&r);
        fc_request(c, json_pack("{s:s, s:s, s:I}", "op", "session_append", "session", id, "offset", (json_int_t)off),
                   NULL, 0, &r);
        if (!fc_error(&r)) {
            fc_resp_free(&r);
            fc_close(c);
            return off;
        }
        CHECK(strcmp(fc_error(&r), "locked") == 0 || strcmp(fc_error(&r), "offset_conflict") == 0);
        fc_resp_free(&r);
        fc_close(c);
        CHECK(sg_now_ms() < until);
        usleep(20 * 1000);
    }
}

/* Returns the byte put says it resumed at ("resuming NAME at byte N of ..."), or -1 when it did not resume. */
static int64_t resumed_at(const char *err)
{
    const char *p = strstr(err, " at byte ");
    return p && strstr(err, "resuming") ? strtoll(p + 9, NULL, 10) : -1;
}

/* Checks name on the server at port holds exactly the bytes of the local file path. */
static void expect_stored(uint16_t port, const char *name, const char *path)
{
    struct fc_conn *c = fc_open(port);
    struct fc_resp r;
    size_t len;
    uint8_t *want = fc_read_file(path, &len);
    char sha[SG_SHA256_HEX];
    CHECK(want != NULL);
    fc_download(c, name, 0, -1, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(r.len, len);
    fc_sha256(want, len, sha);
    CHECK_STR_EQ(r.sha256, sha);
    fc_resp_free(&r);
    fc_close(c);
    free(want);
}

/* Checks name is not stored on the server at port. */
static void expect_absent(uint16_t port, const char *name)
{
    struct fc_conn *c = fc_open(port);
    struct fc_resp r;
    fc_download(c, name, 0, -1, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    fc_close(c);
}

/* Writes len pseudo-random bytes (seed) to work/name and returns its path in path. */
static void make_file(const char *name, size_t len, uint64_t seed, char *path, size_t pathlen)
{
    uint8_t *buf = malloc(len ? len : 1);
    CHECK(buf != NULL);
    fc_fill(buf, len, seed);
    snprintf(path, pathlen, "%s/%s", work, name);
    fc_write_file(path, buf, len);
    free(buf);
}

/* Runs put --resume to completion through a relay on port that forwards everything (the same address as a cut run). */
static int put_run_via(uint16_t port, uint16_t upstream, const char *file, char **out, char **err)
{
    struct relay r;
    int status;
    relay_start(&r, port, upstream, (size_t)1 << 40, 1);
    status = put_run(port, file, out, err);
    relay_end(&r); /* the relay ends when the cli closes its connection */
    return status;
}

/* ---- the tests ---- */

/* The connection is cut after 8 MiB: put fails saying so; run again, it sends only the rest. */
static void test_cut_then_resume(void)
{
    struct relay r;
    char path[400], id[64], *out, *err;
    int64_t off;
    make_file("cut.bin", 24 * MIB + 5, 1, path, sizeof path);
    relay_start(&r, 0, server.port, 8 * MIB, 1);
    CHECK_INT_EQ(put_run(r.port, path, &out, &err), 1);
    relay_end(&r);
    CHECK(strstr(err, "run the same command again") != NULL);
    CHECK_STR_EQ(out, "");
    free(out);
    free(err);
    expect_absent(server.port, "cut.bin");
    remembered_session(id);
    off = settled_offset(server.port, id);
    CHECK(off > 0 && off < 8 * MIB);

    CHECK_INT_EQ(put_run_via(r.port, server.port, path, &out, &err), 0);
    CHECK_INT_EQ(resumed_at(err), off);
    CHECK(strstr(out, "  cut.bin\n") != NULL);
    free(out);
    free(err);
    expect_stored(server.port, "cut.bin", path);
    CHECK_INT_EQ(state_files(), 0);
    CHECK_INT_EQ(fc_count_prefix(root, "."), 4); /* ., .., .meta, .sessions: nothing left over */
}

/* The cli is SIGKILLed mid-transfer: the next run resumes from what the server kept. */
static void test_killed_cli_then_resume(void)
{
    struct relay r;
    char path[400], id[64], *out, *err;
    pid_t pid;
    int64_t off;
    make_file("killed.bin", 20 * MIB, 2, path, sizeof path);
    relay_start(&r, 0, server.port, 5 * MIB, 0);
    pid = put_start(r.port, path);
    relay_wait_spent(&r);
    kill(pid, SIGKILL);
    CHECK_INT_EQ(wait_exit(pid), 128 + SIGKILL);
    relay_end(&r);
    remembered_session(id);
    off = settled_offset(server.port, id);
    CHECK(off > 0 && off < 5 * MIB);
    expect_absent(server.port, "killed.bin");
    CHECK_INT_EQ(put_run_via(r.port, server.port, path, &out, &err), 0);
    CHECK_INT_EQ(resumed_at(err), off);
    free(out);
    free(err);
    expect_stored(server.port, "killed.bin", path);
    CHECK_INT_EQ(state_files(), 0);
}

/* The file backend is SIGKILLed mid-transfer and restarted: the next run resumes all the same. */
static void test_server_killed_then_resume(void)
{
    struct relay r;
    struct sg_proc b;
    char path[400], broot[400], id[64], *out, *err;
    pid_t pid;
    uint16_t port;
    int64_t off;
    snprintf(broot, sizeof broot, "%s/root-b", dir);
    fc_server_start(&b, broot, NULL);
    make_file("phoenix.bin", 16 * MIB + 1, 3, path, sizeof path);
    relay_start(&r, 0, b.port, 6 * MIB, 0);
    port = r.port;
    pid = put_start(port, path);
    relay_wait_spent(&r);
    /* Give the server a moment to write what it received, then kill it with no warning. */
    {
        int64_t until = sg_now_ms() + 20000;
        char data[600];
        remembered_session(id);
        snprintf(data, sizeof data, "%s/.sessions/%s.data", broot, id);
        for (;;) {
            struct stat sb;
            if (stat(data, &sb) == 0 && sb.st_size >= 4 * (off_t)MIB)
                break;
            CHECK(sg_now_ms() < until);
            usleep(10 * 1000);
        }
    }
    CHECK(kill(b.pid, SIGKILL) == 0);
    CHECK(waitpid(b.pid, NULL, 0) == b.pid);
    sg_test_forget(b.pid);
    kill(pid, SIGKILL);
    wait_exit(pid);
    relay_end(&r);

    fc_server_start(&b, broot, NULL);
    off = settled_offset(b.port, id);
    CHECK(off >= 4 * MIB && off < 6 * MIB);
    /* The cli's address (the relay's port) is the same as before, so it finds its state. */
    CHECK_INT_EQ(put_run_via(port, b.port, path, &out, &err), 0);
    CHECK_INT_EQ(resumed_at(err), off);
    free(out);
    free(err);
    expect_stored(b.port, "phoenix.bin", path);
    fc_server_stop(&b);
}

/* A file changed since the interrupted run starts over (and the old session is dropped). */
static void test_changed_file_starts_over(void)
{
    struct relay r;
    char path[400], *out, *err;
    int before;
    make_file("changed.bin", 12 * MIB, 4, path, sizeof path);
    relay_start(&r, 0, server.port, 3 * MIB, 1);
    CHECK_INT_EQ(put_run(r.port, path, &out, &err), 1);
    relay_end(&r);
    free(out);
    free(err);
    {
        char id[64];
        remembered_session(id);
        settled_offset(server.port, id);
    }
    {
        char sessions[400];
        snprintf(sessions, sizeof sessions, "%s/.sessions", root);
        before = fc_count_prefix(sessions, "") - 2;
        CHECK_INT_EQ(before, 2);
    }
    usleep(20 * 1000); /* a new mtime, whatever the filesystem's timestamp granularity within 10 ms */
    make_file("changed.bin", 12 * MIB, 5, path, sizeof path);
    CHECK_INT_EQ(put_run_via(r.port, server.port, path, &out, &err), 0);
    CHECK_INT_EQ(resumed_at(err), -1);
    free(out);
    free(err);
    expect_stored(server.port, "changed.bin", path);
    {
        char sessions[400];
        snprintf(sessions, sizeof sessions, "%s/.sessions", root);
        CHECK_INT_EQ(fc_count_prefix(sessions, "") - 2, 0);
    }
}

/* An empty file and a small one go up through sessions like any other. */
static void test_empty_and_small(void)
{
    char path[400], *out, *err;
    make_file("empty.bin", 0, 6, path, sizeof path);
    CHECK_INT_EQ(put_run(server.port, path, &out, &err), 0);
    CHECK_STR_EQ(out, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  empty.bin\n");
    free(out);
    free(err);
    expect_stored(server.port, "empty.bin", path);
    make_file("small.bin", 1000, 7, path, sizeof path);
    CHECK_INT_EQ(put_run(server.port, path, &out, &err), 0);
    CHECK_STR_EQ(err, "");
    free(out);
    free(err);
    expect_stored(server.port, "small.bin", path);
    CHECK_INT_EQ(state_files(), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    snprintf(work, sizeof work, "%s/work", dir);
    snprintf(state, sizeof state, "%s/state", dir);
    CHECK(mkdir(work, 0755) == 0);
    fc_server_start(&server, root, NULL);
    RUN_TEST(test_empty_and_small);
    RUN_TEST(test_cut_then_resume);
    RUN_TEST(test_killed_cli_then_resume);
    RUN_TEST(test_server_killed_then_resume);
    RUN_TEST(test_changed_file_starts_over);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
