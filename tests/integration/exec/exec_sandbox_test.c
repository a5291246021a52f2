/*
 * exec_sandbox_test.c - an allowed command cannot read, list, write, rename, link or run
 * anything outside its workdir, cannot reach the network, and inside the workdir everything
 * works. Sentinel files outside are compared entry by entry (name, size, mtime, sha256)
 * before and after; a server with --sandbox off reads them, so the checks can fail. The
 * gateway's embedded exec keeps the file backend's root out even inside a granted directory.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/hash.h"
#include "xt_util.h"

#define SECRET "sentinel-secret-5d1f"
#define ALLOW "cat,ls,touch,mv,cp,ln,rm,mkdir,sh,env,bash,stat,head,chmod,truncate"

static char base[256], outside[300], work[300];
static struct sg_proc server;

/* The whole state of the sentinel tree, one line per entry: path, type, size, mtime, sha256. */
static char *snapshot_buf;
static size_t snapshot_len, snapshot_cap;

static int snap_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    char line[1024], hex[SG_SHA256_HEX] = "-";
    (void)type;
    (void)ftw;
    if (S_ISREG(st->st_mode)) {
        struct sg_hash h;
        char buf[4096];
        ssize_t n;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        CHECK(sg_hash_init(&h, 0) == SG_OK);
        while ((n = read(fd, buf, sizeof buf)) > 0)
            sg_hash_update(&h, buf, (size_t)n);
        close(fd);
        sg_hash_final(&h, hex, NULL);
    }
    snprintf(line, sizeof line, "%s %o %lld %lld.%09ld %s\n", path, (unsigned)st->st_mode, (long long)st->st_size,
             (long long)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, hex);
    if (snapshot_len + strlen(line) + 1 > snapshot_cap) {
        snapshot_cap = (snapshot_cap + strlen(line) + 1) * 2;
        snapshot_buf = realloc(snapshot_buf, snapshot_cap);
        CHECK(snapshot_buf != NULL);
    }
    memcpy(snapshot_buf + snapshot_len, line, strlen(line) + 1);
    snapshot_len += strlen(line);
    return 0;
}

/* Returns a new string describing every entry below dir (symlinks not followed, sorted by the walk). */
static char *snapshot(const char *dir)
{
    snapshot_buf = NULL;
    snapshot_len = snapshot_cap = 0;
    CHECK(nftw(dir, snap_entry, 16, FTW_PHYS) == 0);
    return snapshot_buf;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char path[512];
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "w");
    CHECK(f != NULL);
    fputs(text, f);
    fclose(f);
}

/* Sentinels: a secret, a nested file, an executable script, a directory; mtimes set in the past. */
static void make_sentinels(void)
{
    char path[512];
    snprintf(outside, sizeof outside, "%s/outside", base);
    snprintf(work, sizeof work, "%s/work", base);
    CHECK(mkdir(outside, 0755) == 0 && mkdir(work, 0755) == 0);
    write_file(outside, "secret.txt", SECRET "\n");
    snprintf(path, sizeof path, "%s/sub", outside);
    CHECK(mkdir(path, 0755) == 0);
    write_file(path, "deep.txt", SECRET "-deep\n");
    write_file(outside, "tool.sh", "#!/bin/sh\necho escaped\n");
    snprintf(path, sizeof path, "%s/tool.sh", outside);
    CHECK(chmod(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/files", outside); /* the gateway test's file root */
    CHECK(mkdir(path, 0755) == 0);
    write_file(path, "stored.txt", SECRET "-stored\n");
}

/* Runs argv on the server; returns the reply (a result, never an error frame: the command itself ran). */
static void run(const char *const argv[], struct xt_reply *r)
{
    xt_exec(&server, argv, NULL, 0, r);
    CHECK(xt_err_code(r) == NULL);
}

/* The body's stderr part, NUL-terminated (static buffer). */
static const char *stderr_of(const struct xt_reply *r)
{
    static char buf[4096];
    long long out = xt_int(r, "stdout_size"), err = xt_int(r, "stderr_size");
    size_t n = (size_t)err < sizeof buf - 1 ? (size_t)err : sizeof buf - 1;
    memcpy(buf, r->body + out, n);
    buf[n] = '\0';
    return buf;
}

/* Checks a command failed with its own error saying why (one of the reasons given) and leaked no secret. */
static void expect_refused(const char *const argv[], const char *why1, const char *why2)
{
    struct xt_reply r;
    const char *err;
    run(argv, &r);
    err = stderr_of(&r);
    if (xt_int(&r, "exit_code") == 0 || (!strstr(err, why1) && !(why2 && strstr(err, why2))) ||
        memmem(r.body, r.len, SECRET, strlen(SECRET)))
        fprintf(stderr, "%s %s %s: exit %lld, stderr: %s\n", argv[0], argv[1] ? argv[1] : "",
                argv[1] && argv[2] ? argv[2] : "", xt_int(&r, "exit_code"), err);
    CHECK(xt_int(&r, "exit_code") != 0);
    CHECK(strstr(err, why1) || (why2 && strstr(err, why2)));
    CHECK(!memmem(r.body, r.len, SECRET, strlen(SECRET)));
    xt_reply_free(&r);
}

/* Checks a command succeeded; returns nothing, frees the reply. */
static void expect_ok(const char *const argv[])
{
    struct xt_reply r;
    run(argv, &r);
    if (xt_int(&r, "exit_code") != 0)
        fprintf(stderr, "%s %s: exit %lld, stderr: %s\n", argv[0], argv[1] ? argv[1] : "", xt_int(&r, "exit_code"),
                stderr_of(&r));
    CHECK_INT_EQ(xt_int(&r, "exit_code"), 0);
    xt_reply_free(&r);
}

/* Writes dir/name into buf (512 bytes) and returns buf. */
static const char *at(char *buf, const char *dir, const char *name)
{
    size_t n = strlen(dir);
    CHECK(n + strlen(name) + 2 <= 512);
    memcpy(buf, dir, n);
    buf[n] = '/';
    strcpy(buf + n + 1, name);
    return buf;
}

/* Every way out of the workdir through the file system is refused, with the command's own error. */
static void test_outside_refused(void)
{
    char secret[512], sub[512], deep[512], tool[512], planted[512], dotdot[512], script[1024];
    char *before = snapshot(outside), *after;
    at(secret, outside, "secret.txt");
    at(sub, outside, "sub");
    at(deep, sub, "deep.txt");
    at(tool, outside, "tool.sh");
    at(planted, outside, "planted");
    snprintf(dotdot, sizeof dotdot, "../outside/secret.txt");
    {
        const char *const read1[] = {"cat", secret, NULL}, *const read2[] = {"head", deep, NULL};
        const char *const read3[] = {"cat", dotdot, NULL}, *const list1[] = {"ls", outside, NULL};
        const char *const list2[] = {"ls", "..", NULL}, *const list3[] = {"ls", "/", NULL};
        const char *const write1[] = {"touch", planted, NULL}, *const write2[] = {"mkdir", planted, NULL};
        const char *const write3[] = {"cp", "/etc/hostname", planted, NULL};
        const char *const write4[] = {"truncate", "-s", "0", secret, NULL};
        const char *const write5[] = {"chmod", "777", secret, NULL};
        const char *const write6[] = {"touch", "-d", "2001-01-01", secret, NULL};
        const char *const write7[] = {"touch", "-c", deep, NULL};
        const char *const del1[] = {"rm", "-f", secret, NULL};
        const char *const mv1[] = {"mv", secret, "stolen", NULL}, *const mv2[] = {"mv", sub, "stolen-dir", NULL};
        const char *const cp1[] = {"cp", secret, "copy", NULL};
        const char *const tmp1[] = {"touch", "/tmp/sockgate-sandbox-planted", NULL};
        const char *const ln1[] = {"ln", secret, "hard", NULL};
        const char *const ln2[] = {"ln", "-s", secret, "soft", NULL}, *const ln2r[] = {"cat", "soft", NULL};
        const char *const ln3[] = {"ln", "-s", outside, "softdir", NULL}, *const ln3r[] = {"cat", "softdir/secret.txt", NULL};
        const char *const ln4[] = {"ln", "-s", "work-link", planted, NULL};
        const char *const run1[] = {"env", "cat", secret, NULL}, *const run2[] = {"sh", "-c", script, NULL};
        const char *const run3[] = {"env", tool, NULL}, *const run4[] = {"sh", tool, NULL};
        const char *const run5[] = {"cp", "/bin/true", "mytrue", NULL}, *const run5x[] = {"env", "./mytrue", NULL};
        const char *const proc1[] = {"cat", "/proc/1/environ", NULL};
        char ppid_environ[64];
        const char *const proc2[] = {"cat", ppid_environ, NULL};
        snprintf(script, sizeof script, "cat ../outside/secret.txt; ls ../outside; echo x > ../outside/planted; cat %s",
                 deep);
        snprintf(ppid_environ, sizeof ppid_environ, "/proc/%d/environ", (int)server.pid);

        expect_refused(read1, "Permission denied", NULL);
        expect_refused(read2, "Permission denied", NULL);
        expect_refused(read3, "Permission denied", NULL);
        expect_refused(list1, "Permission denied", NULL);
        expect_refused(list2, "Permission denied", NULL);
        expect_refused(list3, "Permission denied", NULL);
        expect_refused(write1, "Permission denied", NULL);
        expect_refused(write2, "Permission denied", NULL);
        expect_refused(write3, "Permission denied", NULL);
        expect_refused(write4, "Permission denied", NULL);
        expect_refused(write5, "Permission denied", "Operation not permitted");
        expect_refused(write6, "Permission denied", "Operation not permitted");
        expect_refused(write7, "Permission denied", "Operation not permitted");
        expect_refused(del1, "Permission denied", NULL);
        expect_refused(mv1, "Permission denied", "Invalid cross-device link");
        expect_refused(mv2, "Permission denied", "Invalid cross-device link");
        expect_refused(cp1, "Permission denied", NULL);
        expect_refused(tmp1, "Permission denied", NULL);
        expect_refused(ln1, "Invalid cross-device link", "Permission denied");
        expect_ok(ln2); /* making a link inside the workdir is fine; following it out is not */
        expect_refused(ln2r, "Permission denied", NULL);
        expect_ok(ln3);
        expect_refused(ln3r, "Permission denied", NULL);
        expect_refused(ln4, "Permission denied", NULL);
        expect_refused(run1, "Permission denied", NULL);
        expect_refused(run2, "Permission denied", NULL);
        expect_refused(run3, "Permission denied", NULL);
        expect_refused(run4, "Permission denied", NULL);
        expect_ok(run5);
        expect_refused(run5x, "Permission denied", NULL); /* the workdir is not executable */
        expect_refused(proc1, "Permission denied", "No such file");
        expect_refused(proc2, "Permission denied", "No such file");
    }
    after = snapshot(outside);
    if (strcmp(before, after) != 0)
        fprintf(stderr, "before:\n%s\nafter:\n%s\n", before, after);
    CHECK_STR_EQ(after, before);
    CHECK(access("/tmp/sockgate-sandbox-planted", F_OK) != 0);
    free(before);
    free(after);
}

/* Inside the workdir: create, write, read, list, rename, link, remove, all as usual. */
static void test_inside_works(void)
{
    const char *const steps[][6] = {
        {"mkdir", "-p", "in/deeper", NULL},
        {"touch", "in/a", NULL},
        {"sh", "-c", "echo hello > in/b && cat in/b >> in/a", NULL},
        {"mv", "in/a", "in/deeper/a", NULL},
        {"ln", "-s", "deeper/a", "in/sym", NULL},
        {"ln", "in/b", "in/hard", NULL},
        {"truncate", "-s", "3", "in/hard", NULL},
        {"cp", "-r", "in", "in2", NULL},
        {"rm", "-r", "in2", NULL},
        {"rm", "in/b", NULL},
    };
    const char *const show[] = {"cat", "in/sym", "in/hard", NULL};
    const char *const list[] = {"ls", "in", NULL};
    struct xt_reply r;
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++)
        expect_ok(steps[i]);
    xt_exec(&server, show, NULL, 0, &r);
    xt_check_stdout(&r, "hello\nhel");
    xt_reply_free(&r);
    xt_exec(&server, list, NULL, 0, &r);
    xt_check_stdout(&r, "deeper\nhard\nsym\n");
    xt_reply_free(&r);
}

/* No network: a TCP connection to a loopback listener of this test never arrives. */
static void test_no_network(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    char script[256];
    const char *const argv[] = {"bash", "-c", script, NULL};
    struct xt_reply r;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 4) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&sa, &sl) == 0);
    snprintf(script, sizeof script, "echo hi > /dev/tcp/127.0.0.1/%d && echo connected", ntohs(sa.sin_port));
    run(argv, &r);
    CHECK(xt_int(&r, "exit_code") != 0);
    CHECK(!memmem(r.body, r.len, "connected", 9));
    xt_reply_free(&r);
    CHECK(accept(fd, NULL, NULL) < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
    close(fd);
}

/* The control: with --sandbox off the same command reads the sentinel, so the refusals above mean something. */
static void test_off_reads_everything(void)
{
    char secret[512];
    const char *const read1[] = {"cat", at(secret, outside, "secret.txt"), NULL};
    const char *const args[] = {"--allow", "cat", "--workdir", work, "--sandbox", "off", NULL};
    struct sg_proc off;
    struct xt_reply r;
    xt_start(&off, args);
    xt_exec(&off, read1, NULL, 0, &r);
    xt_check_stdout(&r, SECRET "\n");
    xt_reply_free(&r);
    xt_stop(&off);
}

/* --sandbox-read grants a directory, --sandbox-protect keeps one path below it out. */
static void test_protect_inside_grant(void)
{
    char secret[512], sub[512], deep[512];
    const char *const args[] = {"--allow", "cat,head", "--workdir", work, "--sandbox-read", outside,
                                "--sandbox-protect", at(sub, outside, "sub"), NULL};
    const char *const read_ok[] = {"cat", at(secret, outside, "secret.txt"), NULL};
    const char *const read_no[] = {"head", at(deep, sub, "deep.txt"), NULL};
    struct sg_proc p, saved = server;
    struct xt_reply r;
    xt_start(&p, args);
    xt_exec(&p, read_ok, NULL, 0, &r);
    xt_check_stdout(&r, SECRET "\n");
    xt_reply_free(&r);
    server = p;
    expect_refused(read_no, "Permission denied", NULL);
    server = saved;
    xt_stop(&p);
}

/* Returns 1 when the server's log holds text. */
static int log_has(const struct sg_proc *p, const char *text)
{
    char buf[16384];
    ssize_t n;
    int fd = open(p->log_path, O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    CHECK(n >= 0);
    buf[n] = '\0';
    return strstr(buf, text) != NULL;
}

/*
 * The gateway's embedded exec, granted the sentinel directory: it reads the secret there, but
 * the file backend's root inside it stays out (and so does the listing of the granted directory
 * itself, which Landlock can only give whole). /readyz says what is on.
 */
static void test_gateway_protects_file_root(void)
{
    char root[512], stored[512], secret[512], exec_addr[128] = "", logbuf[16384];
    const char *const args[] = {"sockgate", "--listen", "127.0.0.1:0", "--file-root", at(root, outside, "files"),
                                "--sandbox-read", outside, "--allow", "cat,ls", NULL};
    struct sg_proc gw;
    struct xt_reply r;
    const char *p;
    ssize_t n;
    int fd;
    CHECK(sg_proc_start(&gw, args, 20000) == 0);
    fd = open(gw.log_path, O_RDONLY | O_CLOEXEC);
    n = read(fd, logbuf, sizeof logbuf - 1);
    close(fd);
    CHECK(n > 0);
    logbuf[n] = '\0';
    p = strstr(logbuf, "embedded exec backend serving at ");
    CHECK(p != NULL);
    sscanf(p + strlen("embedded exec backend serving at "), "%127s", exec_addr);
    CHECK(log_has(&gw, "is protected, so commands get no access to it"));
    {
        struct sg_proc view = gw;
        const char *read_ok[] = {"cat", at(secret, outside, "secret.txt"), NULL};
        const char *const read_no[] = {"cat", at(stored, root, "stored.txt"), NULL};
        const char *const list_no[] = {"ls", root, NULL};
        /* The embedded exec listens on a UNIX socket in the gateway's private directory. */
        CHECK(strncmp(exec_addr, "unix:", 5) == 0);
        snprintf(view.addr, sizeof view.addr, "%s", exec_addr);
        xt_exec(&view, read_ok, NULL, 0, &r);
        xt_check_stdout(&r, SECRET "\n");
        xt_reply_free(&r);
        server = view;
        expect_refused(read_no, "Permission denied", NULL);
        expect_refused(list_no, "Permission denied", NULL);
    }
    {
        char url[160];
        const char *const curl[] = {"curl", "-s", url, NULL};
        struct xt_run_result rr;
        snprintf(url, sizeof url, "http://%s/readyz", gw.addr);
        CHECK(xt_run(curl, NULL, 0, 20000, &rr) == 0);
        CHECK_INT_EQ(rr.status, 0);
        CHECK(strstr(rr.out, "\"sandbox\":{\"mode\":\"best-effort\"") != NULL);
        CHECK(strstr(rr.out, "\"files\":true") != NULL);
        xt_run_free(&rr);
    }
    CHECK_INT_EQ(sg_proc_stop(&gw, 10000), 0);
}

int main(void)
{
    const char *args[] = {"--allow", ALLOW, "--workdir", NULL, NULL};
    struct sg_proc main_server;
    CHECK(sg_test_tmpdir(base, sizeof base) == 0);
    make_sentinels();
    args[3] = work;
    xt_start(&main_server, args);
    server = main_server;
    if (!log_has(&server, "files confined (Landlock)")) {
        /* Nothing to test on a kernel without Landlock: say so, as ctest's skip. */
        fprintf(stderr, "SKIP: this kernel offers no Landlock (see the server's log)\n");
        xt_stop(&main_server);
        sg_test_rmtree(base);
        return 77;
    }
    RUN_TEST(test_outside_refused);
    RUN_TEST(test_inside_works);
    if (log_has(&server, "network none (own namespace)"))
        RUN_TEST(test_no_network);
    else
        fprintf(stderr, "no network namespace on this kernel: the network check is skipped\n");
    RUN_TEST(test_off_reads_everything);
    RUN_TEST(test_protect_inside_grant);
    xt_stop(&main_server);
    RUN_TEST(test_gateway_protects_file_root);
    sg_test_rmtree(base);
    return 0;
}
