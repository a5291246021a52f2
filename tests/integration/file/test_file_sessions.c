/*
 * test_file_sessions.c - resumable uploads (upload sessions) in the real
 * sockgate-file over raw frames: create, append, stat, finish, abort; an
 * offset conflict, a concurrent append locked out, a checksum mismatch that
 * drops its bytes, a connection cut mid-append that keeps them, the server
 * SIGKILLed and restarted between and during appends, expiry freeing the
 * storage, and nothing unfinished ever listed or downloadable.
 */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define MIB (1024u * 1024u)

static char dir[256], root[300];
static struct sg_proc server;

/* ---- helpers ---- */

/* Sends a session request (op, session id when not NULL, extra fields stolen) with body; the answer into r. */
static void sreq(struct fc_conn *c, const char *op, const char *id, json_t *extra, const void *body, size_t len,
                 struct fc_resp *r)
{
    json_t *h = json_pack("{s:s}", "op", op);
    CHECK(h != NULL);
    if (id)
        json_object_set_new(h, "session", json_string(id));
    if (extra) {
        json_object_update(h, extra);
        json_decref(extra);
    }
    if (len)
        json_object_set_new(h, "total_size", json_integer((json_int_t)len));
    fc_request(c, h, body, len, r);
}

/* Creates a session for name (length < 0: deferred) and copies its id into id; checks it starts at 0. */
static void create(struct fc_conn *c, const char *name, int64_t length, char id[64])
{
    struct fc_resp r;
    json_t *x = json_pack("{s:s}", "filename", name);
    if (length >= 0)
        json_object_set_new(x, "length", json_integer(length));
    else
        json_object_set_new(x, "defer_length", json_true());
    sreq(c, "session_create", NULL, x, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(strlen(fc_str(&r, "session")), 32);
    CHECK_INT_EQ(fc_int(&r, "offset"), 0);
    snprintf(id, 64, "%s", fc_str(&r, "session"));
    fc_resp_free(&r);
}

/* Appends len bytes at offset (extra: more fields, stolen, may be NULL); the answer into r. */
static void append(struct fc_conn *c, const char *id, uint64_t offset, const void *buf, size_t len, json_t *extra,
                   struct fc_resp *r)
{
    json_t *x = json_pack("{s:I}", "offset", (json_int_t)offset);
    if (extra) {
        json_object_update(x, extra);
        json_decref(extra);
    }
    sreq(c, "session_append", id, x, buf, len, r);
}

/* Appends and checks the answer is a success at offset + len; returns its "finished". */
static int append_ok(struct fc_conn *c, const char *id, uint64_t offset, const void *buf, size_t len)
{
    struct fc_resp r;
    int finished;
    append(c, id, offset, buf, len, NULL, &r);
    if (fc_error(&r))
        fprintf(stderr, "append failed: %s\n", json_dumps(r.h, JSON_COMPACT));
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "offset"), offset + len);
    finished = json_is_true(json_object_get(r.h, "finished"));
    fc_resp_free(&r);
    return finished;
}

/* Returns the session's offset from session_stat, or -1 when it answers an error (its code into code). */
static int64_t stat_offset(uint16_t port, const char *id, const char **code)
{
    struct fc_conn *c = fc_open(port);
    static char saved[64];
    struct fc_resp r;
    int64_t off;
    sreq(c, "session_stat", id, NULL, NULL, 0, &r);
    snprintf(saved, sizeof saved, "%s", fc_error(&r) ? fc_error(&r) : "");
    if (code)
        *code = saved;
    off = fc_error(&r) ? -1 : fc_int(&r, "offset");
    fc_resp_free(&r);
    fc_close(c);
    return off;
}

/*
 * Waits (at most 20 s) until no request holds the session, by appending
 * nothing at its current offset; returns that offset.
 */
static int64_t wait_unlocked(uint16_t port, const char *id)
{
    int64_t until = sg_now_ms() + 20000;
    for (;;) {
        struct fc_conn *c = fc_open(port);
        struct fc_resp r;
        int64_t off = stat_offset(port, id, NULL);
        CHECK(off >= 0);
        append(c, id, (uint64_t)off, NULL, 0, NULL, &r);
        if (!fc_error(&r)) {
            CHECK_INT_EQ(fc_int(&r, "offset"), off);
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

/* Sends a request header announcing total body bytes, then only the first sent of them. */
static void send_partial(struct fc_conn *c, json_t *h, const uint8_t *body, size_t total, size_t sent)
{
    json_object_set_new(h, "total_size", json_integer((json_int_t)total));
    CHECK(fc_send(c, h, NULL, 0) == SG_OK);
    CHECK(sg_write_all(c->fd, body, sent, sg_now_ms() + 20000) == SG_OK);
}

/* Counts the entries of ROOT/.sessions (data files and records). */
static int session_files(const char *r)
{
    char path[400];
    DIR *d;
    struct dirent *e;
    int n = 0;
    snprintf(path, sizeof path, "%s/.sessions", r);
    d = opendir(path);
    CHECK(d != NULL);
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* Checks that name is neither listed nor downloadable on the server at port. */
static void expect_invisible(uint16_t port, const char *name)
{
    struct fc_conn *c = fc_open(port);
    struct fc_resp r;
    fc_download(c, name, 0, -1, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    fc_request(c, json_pack("{s:s}", "op", "list"), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK(r.body != NULL);
    {
        char needle[300];
        snprintf(needle, sizeof needle, "\"%s\"", name);
        CHECK(memmem(r.body, r.len, needle, strlen(needle)) == NULL);
        /* Nothing of the sessions' directory shows either. */
        CHECK(memmem(r.body, r.len, ".sessions", 9) == NULL);
    }
    fc_resp_free(&r);
    fc_close(c);
}

/* Checks that name is served with exactly want[0..len) and the sha256 of those bytes. */
static void expect_content(uint16_t port, const char *name, const uint8_t *want, size_t len)
{
    struct fc_conn *c = fc_open(port);
    struct fc_resp r;
    char sha[SG_SHA256_HEX];
    fc_download(c, name, 0, -1, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(r.len, len);
    CHECK(memcmp(r.body, want, len) == 0);
    fc_sha256(want, len, sha);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha);
    fc_resp_free(&r);
    fc_close(c);
}

/* Kills the server with SIGKILL (no clean-up of any kind) and waits for it. */
static void kill_server(struct sg_proc *p)
{
    CHECK(kill(p->pid, SIGKILL) == 0);
    CHECK(waitpid(p->pid, NULL, 0) == p->pid);
    sg_test_forget(p->pid);
}

/* ---- the tests ---- */

/* create, stat, appends of every size (small, the big-read path, the last with its sha256), finish, gone. */
static void test_lifecycle(void)
{
    const size_t total = 10 * MIB + 7, first = 100, second = 5 * MIB;
    uint8_t *buf = malloc(total);
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64], sha_last[SG_SHA256_HEX], sha_all[SG_SHA256_HEX];
    int64_t now = (int64_t)time(NULL);

    CHECK(buf != NULL);
    fc_fill(buf, total, 1);
    fc_sha256(buf, total, sha_all);
    sreq(c, "session_create", NULL,
         json_pack("{s:s, s:I, s:s}", "filename", "life.bin", "length", (json_int_t)total, "metadata",
                   "filename bGlmZS5iaW4=,kind eA=="),
         NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    snprintf(id, sizeof id, "%s", fc_str(&r, "session"));
    CHECK_INT_EQ(strlen(id), 32);
    CHECK_INT_EQ(fc_int(&r, "length"), total);
    CHECK(json_is_false(json_object_get(r.h, "finished")));
    /* A day by default, counted from now. */
    CHECK(fc_int(&r, "expires_ms") >= (now + 86400 - 5) * 1000 && fc_int(&r, "expires_ms") <= (now + 86400 + 5) * 1000);
    fc_resp_free(&r);

    sreq(c, "session_stat", id, NULL, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "offset"), 0);
    CHECK_INT_EQ(fc_int(&r, "length"), total);
    CHECK_STR_EQ(fc_str(&r, "metadata"), "filename bGlmZS5iaW4=,kind eA==");
    CHECK_STR_EQ(fc_str(&r, "filename"), "life.bin");
    CHECK(json_is_false(json_object_get(r.h, "defer_length")));
    CHECK(fc_int(&r, "created_ms") >= (now - 5) * 1000);
    fc_resp_free(&r);

    CHECK(!append_ok(c, id, 0, buf, first));
    expect_invisible(server.port, "life.bin");
    CHECK(!append_ok(c, id, first, buf + first, second));
    CHECK_INT_EQ(stat_offset(server.port, id, NULL), first + second);
    expect_invisible(server.port, "life.bin");
    /* The last piece, with its own checksum: completing the length finishes the upload. */
    fc_sha256(buf + first + second, total - first - second, sha_last);
    append(c, id, first + second, buf + first + second, total - first - second, json_pack("{s:s}", "sha256", sha_last),
           &r);
    CHECK(fc_error(&r) == NULL);
    CHECK(json_is_true(json_object_get(r.h, "finished")));
    CHECK_STR_EQ(fc_str(&r, "name"), "life.bin");
    CHECK_INT_EQ(fc_int(&r, "size"), total);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha_all);
    CHECK(json_is_true(json_object_get(r.h, "created")));
    fc_resp_free(&r);
    expect_content(server.port, "life.bin", buf, total);
    /* The session is over, and its storage with it. */
    sreq(c, "session_stat", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    append(c, id, total, "x", 1, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    CHECK_INT_EQ(session_files(root), 0);
    /* The stat of the finished file carries the same sha256 (recorded by the commit). */
    fc_request(c, json_pack("{s:s, s:s}", "op", "stat", "filename", "life.bin"), NULL, 0, &r);
    CHECK_STR_EQ(fc_str(&r, "sha256"), sha_all);
    fc_resp_free(&r);
    fc_close(c);
    free(buf);
}

/*
 * A client that sends its next append as soon as the answer to the last one
 * came, on a new connection, never finds the session still held: the server
 * lets go of it before it answers.
 */
static void test_back_to_back(void)
{
    struct fc_conn *c = fc_open(server.port);
    char id[64];
    uint8_t buf[64];
    create(c, "b2b.bin", (int64_t)sizeof buf, id);
    fc_close(c);
    fc_fill(buf, sizeof buf, 9);
    for (size_t i = 0; i < sizeof buf; i++) {
        c = fc_open(server.port);
        CHECK_INT_EQ(append_ok(c, id, i, buf + i, 1), i + 1 == sizeof buf);
        fc_close(c);
    }
    expect_content(server.port, "b2b.bin", buf, sizeof buf);
}

/* An append at any offset but the session's is refused, costs nothing, and says where the session is. */
static void test_offset_conflict(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64];
    create(c, "conflict.txt", 10, id);
    CHECK(!append_ok(c, id, 0, "hello", 5));
    append(c, id, 3, "zzzzz", 5, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "offset_conflict");
    CHECK_INT_EQ(fc_int(&r, "offset"), 5);
    CHECK_STR_EQ(fc_str(&r, "session"), id);
    fc_resp_free(&r);
    append(c, id, 0, "zzzzz", 5, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "offset_conflict");
    fc_resp_free(&r);
    append(c, id, 7, "zzz", 3, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "offset_conflict");
    fc_resp_free(&r);
    /* The same connection goes on, and the bytes are the right ones. */
    CHECK(append_ok(c, id, 5, "world", 5));
    expect_content(server.port, "conflict.txt", (const uint8_t *)"helloworld", 10);
    fc_close(c);
}

/* While one append is in flight, a second one on the same session (and an abort) are refused as locked. */
static void test_concurrent_append_locked(void)
{
    const size_t total = 2 * MIB;
    uint8_t *buf = malloc(total);
    struct fc_conn *a = fc_open(server.port), *b = fc_open(server.port);
    struct fc_resp r;
    char id[64];
    int64_t until = sg_now_ms() + 20000;

    CHECK(buf != NULL);
    fc_fill(buf, total, 2);
    create(a, "locked.bin", (int64_t)total, id);
    send_partial(a, json_pack("{s:s, s:s, s:i}", "op", "session_append", "session", id, "offset", 0), buf, total,
                 MIB);
    /* A's bytes are being written, so A holds the session. */
    while (stat_offset(server.port, id, NULL) < 1) {
        CHECK(sg_now_ms() < until);
        usleep(10 * 1000);
    }
    append(b, id, 0, buf, 100, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "locked");
    fc_resp_free(&r);
    append(b, id, MIB, buf + MIB, 100, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "locked");
    fc_resp_free(&r);
    sreq(b, "session_abort", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "locked");
    fc_resp_free(&r);
    sreq(b, "session_finish", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "locked");
    fc_resp_free(&r);
    /* A finishes its body and the upload. */
    CHECK(sg_write_all(a->fd, buf + MIB, total - MIB, sg_now_ms() + 20000) == SG_OK);
    CHECK(fc_recv(a, &r, 4096) == SG_OK);
    CHECK(fc_error(&r) == NULL);
    CHECK(json_is_true(json_object_get(r.h, "finished")));
    fc_resp_free(&r);
    expect_content(server.port, "locked.bin", buf, total);
    fc_close(a);
    fc_close(b);
    free(buf);
}

/* A checksum that does not match drops exactly that request's bytes; sha1, md5 and sha256 all count. */
static void test_checksum_mismatch(void)
{
    const size_t piece = 3 * MIB;
    uint8_t *buf = malloc(3 * piece);
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64], sha[SG_SHA256_HEX];
    CHECK(buf != NULL);
    fc_fill(buf, 3 * piece, 3);
    create(c, "summed.bin", (int64_t)(3 * piece), id);
    CHECK(!append_ok(c, id, 0, buf, piece));
    append(c, id, piece, buf + piece, piece, json_pack("{s:s}", "sha1", "0123456789abcdef0123456789abcdef01234567"),
           &r);
    CHECK_STR_EQ(fc_error(&r), "chunk_checksum_mismatch");
    CHECK_INT_EQ(fc_int(&r, "offset"), piece);
    fc_resp_free(&r);
    CHECK_INT_EQ(stat_offset(server.port, id, NULL), piece);
    append(c, id, piece, buf + piece, 10, json_pack("{s:s}", "md5", "00000000000000000000000000000000"), &r);
    CHECK_STR_EQ(fc_error(&r), "chunk_checksum_mismatch");
    fc_resp_free(&r);
    fc_sha256("not these bytes", 15, sha);
    append(c, id, piece, buf + piece, piece, json_pack("{s:s}", "sha256", sha), &r);
    CHECK_STR_EQ(fc_error(&r), "chunk_checksum_mismatch");
    fc_resp_free(&r);
    CHECK_INT_EQ(stat_offset(server.port, id, NULL), piece);
    /* The right digests (either case) are taken; the file in the end is exactly the bytes. */
    append(c, id, piece, buf + piece, piece,
           json_pack("{s:s, s:s}", "sha1", "", "md5", "ignored"), &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    {
        /* sha1 and md5 of the piece, computed with the reference tools' algorithm through libcrypto */
        char sha1[SG_SHA1_HEX], md5[SG_MD5_HEX];
        struct sg_hash h;
        CHECK(sg_hash_start(&h, SG_HASH_SHA1 | SG_HASH_MD5) == SG_OK);
        sg_hash_update(&h, buf + piece, piece);
        sg_hash_final_all(&h, NULL, md5, sha1);
        for (char *p = sha1; *p; p++)
            *p = (char)(*p >= 'a' && *p <= 'f' ? *p - 32 : *p);
        append(c, id, piece, buf + piece, piece, json_pack("{s:s, s:s}", "sha1", sha1, "md5", md5), &r);
        CHECK(fc_error(&r) == NULL);
        CHECK_INT_EQ(fc_int(&r, "offset"), 2 * piece);
        fc_resp_free(&r);
    }
    CHECK(append_ok(c, id, 2 * piece, buf + 2 * piece, piece));
    expect_content(server.port, "summed.bin", buf, 3 * piece);
    fc_close(c);
    free(buf);
}

/*
 * A connection cut in the middle of an append keeps the bytes that arrived;
 * the next append continues from the offset stat reports. With a checksum
 * the cut bytes cannot be verified, so they are dropped.
 */
static void test_cut_keeps_arrived_bytes(void)
{
    const size_t total = 8 * MIB, sent = 3 * MIB;
    uint8_t *buf = malloc(total);
    struct fc_conn *c = fc_open(server.port);
    char id[64], sha[SG_SHA256_HEX];
    int64_t off;

    CHECK(buf != NULL);
    fc_fill(buf, total, 4);
    create(c, "cut.bin", (int64_t)total, id);
    send_partial(c, json_pack("{s:s, s:s, s:i}", "op", "session_append", "session", id, "offset", 0), buf, total,
                 sent);
    fc_close(c);
    off = wait_unlocked(server.port, id);
    /* Loopback delivers every byte sent before the close: all of them are kept. */
    CHECK_INT_EQ(off, sent);
    expect_invisible(server.port, "cut.bin");

    /* A cut append that carried a checksum: nothing of it is kept. */
    c = fc_open(server.port);
    fc_sha256(buf + off, total - (size_t)off, sha);
    send_partial(c,
                 json_pack("{s:s, s:s, s:I, s:s}", "op", "session_append", "session", id, "offset", (json_int_t)off,
                           "sha256", sha),
                 buf + off, total - (size_t)off, MIB);
    fc_close(c);
    CHECK_INT_EQ(wait_unlocked(server.port, id), off);

    /*
     * The service may read the cut request only after wait_unlocked's probe
     * went through (nothing of it changes the offset to wait for), and lock
     * the session for it then: "locked" is retried, as a tus client does.
     */
    {
        int64_t until = sg_now_ms() + 20000;
        for (;;) {
            struct fc_resp r;
            c = fc_open(server.port);
            append(c, id, (uint64_t)off, buf + off, total - (size_t)off, NULL, &r);
            fc_close(c);
            if (!fc_error(&r)) {
                CHECK_INT_EQ(fc_int(&r, "offset"), (int64_t)total);
                fc_resp_free(&r);
                break;
            }
            CHECK_STR_EQ(fc_error(&r), "locked");
            fc_resp_free(&r);
            CHECK(sg_now_ms() < until);
            usleep(20 * 1000);
        }
    }
    expect_content(server.port, "cut.bin", buf, total);
    free(buf);
}

/*
 * The file backend SIGKILLed between appends and in the middle of one, then
 * restarted on the same root: the session and its bytes are there, the
 * upload goes on from the stat offset and completes with the right bytes
 * (the sha256 recomputed from disk: the running one died with the process).
 */
static void test_backend_killed_and_restarted(void)
{
    const size_t total = 6 * MIB + 123;
    uint8_t *buf = malloc(total);
    struct sg_proc p;
    struct fc_conn *c;
    char r2[400], id[64];
    int64_t off;

    CHECK(buf != NULL);
    fc_fill(buf, total, 5);
    snprintf(r2, sizeof r2, "%s/root-restart", dir);
    fc_server_start(&p, r2, NULL);
    c = fc_open(p.port);
    create(c, "phoenix.bin", (int64_t)total, id);
    CHECK(!append_ok(c, id, 0, buf, 2 * MIB));
    fc_close(c);
    kill_server(&p);

    fc_server_start(&p, r2, NULL);
    CHECK_INT_EQ(stat_offset(p.port, id, NULL), 2 * MIB);
    expect_invisible(p.port, "phoenix.bin");
    /* Killed again, this time with an append under way. */
    c = fc_open(p.port);
    send_partial(c, json_pack("{s:s, s:s, s:I}", "op", "session_append", "session", id, "offset", (json_int_t)2 * MIB),
                 buf + 2 * MIB, total - 2 * MIB, 2 * MIB);
    {
        int64_t until = sg_now_ms() + 20000;
        while (stat_offset(p.port, id, NULL) <= 2 * MIB) {
            CHECK(sg_now_ms() < until);
            usleep(10 * 1000);
        }
    }
    kill_server(&p);
    fc_close(c);

    fc_server_start(&p, r2, NULL);
    off = stat_offset(p.port, id, NULL);
    CHECK(off > 2 * MIB && off <= 4 * MIB);
    expect_invisible(p.port, "phoenix.bin");
    c = fc_open(p.port);
    CHECK(append_ok(c, id, (uint64_t)off, buf + off, total - (size_t)off));
    fc_close(c);
    expect_content(p.port, "phoenix.bin", buf, total);
    CHECK_INT_EQ(session_files(r2), 0);
    fc_server_stop(&p);
    free(buf);
}

/* An unfinished upload untouched for --session-expiry is gone, and its storage freed by the sweep. */
static void test_expiry_frees_storage(void)
{
    const char *flags[] = {"--session-expiry", "2s", NULL};
    uint8_t *buf = malloc(MIB);
    struct sg_proc p;
    struct fc_conn *c;
    char r2[400], id[64];
    int64_t until;

    CHECK(buf != NULL);
    fc_fill(buf, MIB, 6);
    snprintf(r2, sizeof r2, "%s/root-expiry", dir);
    fc_server_start(&p, r2, flags);
    c = fc_open(p.port);
    create(c, "ephemeral.bin", 4 * MIB, id);
    {
        int64_t appended;
        CHECK(!append_ok(c, id, 0, buf, MIB));
        appended = sg_now_ms();
        /* Its data and its record, unless this machine was so slow that they expired already. */
        if (session_files(r2) != 2)
            CHECK(sg_now_ms() - appended >= 1000);
    }
    fc_close(c);
    until = sg_now_ms() + 30000;
    while (session_files(r2) != 0) {
        CHECK(sg_now_ms() < until);
        usleep(100 * 1000);
    }
    {
        const char *code = NULL;
        CHECK_INT_EQ(stat_offset(p.port, id, &code), -1);
        CHECK_STR_EQ(code, "not_found");
    }
    expect_invisible(p.port, "ephemeral.bin");
    fc_server_stop(&p);

    /* A bad duration stops the start with a usage error. */
    {
        const char *argv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", r2, "--session-expiry", "0s", NULL};
        CHECK_INT_EQ(fc_run(argv, NULL, NULL), 2);
        argv[6] = "soon";
        CHECK_INT_EQ(fc_run(argv, NULL, NULL), 2);
    }
    free(buf);
}

/* An abort removes the session and its bytes; afterwards every op on it is not_found. */
static void test_abort(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64];
    int before = session_files(root);
    create(c, "aborted.txt", 100, id);
    CHECK(!append_ok(c, id, 0, "some bytes", 10));
    CHECK_INT_EQ(session_files(root), before + 2);
    sreq(c, "session_abort", id, NULL, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK(json_is_true(json_object_get(r.h, "aborted")));
    fc_resp_free(&r);
    CHECK_INT_EQ(session_files(root), before);
    sreq(c, "session_abort", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    sreq(c, "session_finish", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    append(c, id, 10, "more", 4, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    expect_invisible(server.port, "aborted.txt");
    fc_close(c);
}

/* A deferred length is set by an append (which then finishes) or by an explicit finish. */
static void test_deferred_length(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64];

    create(c, "deferred-a.txt", -1, id);
    sreq(c, "session_stat", id, NULL, NULL, 0, &r);
    CHECK(json_is_true(json_object_get(r.h, "defer_length")));
    CHECK(json_object_get(r.h, "length") == NULL);
    fc_resp_free(&r);
    CHECK(!append_ok(c, id, 0, "first ", 6));
    /* A length shorter than what is there plus this append is refused. */
    append(c, id, 6, "second", 6, json_pack("{s:i}", "length", 11), &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    append(c, id, 6, "second", 6, json_pack("{s:i}", "length", 12), &r);
    CHECK(fc_error(&r) == NULL);
    CHECK(json_is_true(json_object_get(r.h, "finished")));
    fc_resp_free(&r);
    expect_content(server.port, "deferred-a.txt", (const uint8_t *)"first second", 12);

    create(c, "deferred-b.txt", -1, id);
    CHECK(!append_ok(c, id, 0, "only", 4));
    CHECK(!append_ok(c, id, 4, " this", 5));
    expect_invisible(server.port, "deferred-b.txt");
    sreq(c, "session_finish", id, NULL, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "size"), 9);
    fc_resp_free(&r);
    expect_content(server.port, "deferred-b.txt", (const uint8_t *)"only this", 9);

    /* A length set once stays: another one is refused. */
    create(c, "deferred-c.txt", -1, id);
    append(c, id, 0, "ab", 2, json_pack("{s:i}", "length", 4), &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "length"), 4);
    fc_resp_free(&r);
    append(c, id, 2, "cd", 2, json_pack("{s:i}", "length", 5), &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    CHECK(append_ok(c, id, 2, "cd", 2));
    expect_content(server.port, "deferred-c.txt", (const uint8_t *)"abcd", 4);
    fc_close(c);
}

/* A zero-length upload is finished at creation; creation can carry the first bytes (tus creation-with-upload). */
static void test_create_with_upload(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64];
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i}", "filename", "empty.txt", "length", 0), NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK(json_is_true(json_object_get(r.h, "finished")));
    CHECK_STR_EQ(fc_str(&r, "sha256"), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    fc_resp_free(&r);
    expect_content(server.port, "empty.txt", (const uint8_t *)"", 0);

    sreq(c, "session_create", NULL, json_pack("{s:s, s:i}", "filename", "withbody.txt", "length", 11), "hello", 5, &r);
    CHECK(fc_error(&r) == NULL);
    CHECK_INT_EQ(fc_int(&r, "offset"), 5);
    CHECK(json_is_false(json_object_get(r.h, "finished")));
    snprintf(id, sizeof id, "%s", fc_str(&r, "session"));
    fc_resp_free(&r);
    CHECK(append_ok(c, id, 5, " world", 6));
    expect_content(server.port, "withbody.txt", (const uint8_t *)"hello world", 11);

    /* A first piece whose checksum fails: the session exists (named in the error), empty. */
    sreq(c, "session_create", NULL,
         json_pack("{s:s, s:i, s:s}", "filename", "badfirst.txt", "length", 5, "md5", "00000000000000000000000000000000"),
         "hello", 5, &r);
    CHECK_STR_EQ(fc_error(&r), "chunk_checksum_mismatch");
    snprintf(id, sizeof id, "%s", fc_str(&r, "session"));
    CHECK_INT_EQ(strlen(id), 32);
    fc_resp_free(&r);
    CHECK_INT_EQ(stat_offset(server.port, id, NULL), 0);
    CHECK(append_ok(c, id, 0, "HELLO", 5));
    expect_content(server.port, "withbody.txt", (const uint8_t *)"hello world", 11);
    expect_content(server.port, "badfirst.txt", (const uint8_t *)"HELLO", 5);
    fc_close(c);
}

/* Conditions given at creation hold at creation and again at the finish, as an upload's do. */
static void test_conditions(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64];
    fc_upload(c, "taken.txt", "old", 3, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i, s:s}", "filename", "taken.txt", "length", 3, "if_none_match", "*"),
         NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "precondition_failed");
    fc_resp_free(&r);
    /* The name is free at creation but taken by an upload before the finish: nothing stored, the session kept. */
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i, s:s}", "filename", "raced.txt", "length", 3, "if_none_match", "*"),
         NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    snprintf(id, sizeof id, "%s", fc_str(&r, "session"));
    fc_resp_free(&r);
    fc_upload(c, "raced.txt", "won", 3, NULL, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    append(c, id, 0, "new", 3, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "precondition_failed");
    CHECK_INT_EQ(fc_int(&r, "offset"), 3);
    fc_resp_free(&r);
    expect_content(server.port, "raced.txt", (const uint8_t *)"won", 3);
    CHECK_INT_EQ(stat_offset(server.port, id, NULL), 3);
    sreq(c, "session_abort", id, NULL, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    /* An existing file is replaced by a finished session (created: false). */
    create(c, "taken.txt", 3, id);
    append(c, id, 0, "new", 3, NULL, &r);
    CHECK(json_is_true(json_object_get(r.h, "finished")));
    CHECK(json_is_false(json_object_get(r.h, "created")));
    fc_resp_free(&r);
    expect_content(server.port, "taken.txt", (const uint8_t *)"new", 3);
    fc_close(c);
}

/* Every broken field is refused with a clear error, nothing is created, and the connection goes on. */
static void test_bad_input(void)
{
    struct fc_conn *c = fc_open(server.port);
    struct fc_resp r;
    char id[64], longmeta[20000];
    int before;
    static const struct {
        const char *op;
        const char *header; /* the rest of the header's JSON object */
        const char *code;
    } cases[] = {
        {"session_create", "", "invalid_request"},
        {"session_create", "\"filename\":\"a\"", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":1,\"defer_length\":true", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"defer_length\":false", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"defer_length\":1", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":-1", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":1.5", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":\"5\"", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":9007199254740993", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":9007199254740992", "too_large"},
        {"session_create", "\"filename\":\"../x\",\"length\":1", "invalid_name"},
        {"session_create", "\"filename\":\".sessions\",\"length\":1", "invalid_name"},
        {"session_create", "\"filename\":5,\"length\":1", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":1,\"metadata\":5", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":1,\"sha1\":\"abc\"", "invalid_request"},
        {"session_create", "\"filename\":\"a\",\"length\":1,\"if_match\":\"nope\"", "invalid_request"},
        {"session_append", "\"offset\":0", "invalid_request"},
        {"session_append", "\"session\":\"0123456789abcdef0123456789abcdef\"", "invalid_request"},
        {"session_append", "\"session\":\"0123456789abcdef0123456789abcdef\",\"offset\":0", "not_found"},
        {"session_append", "\"session\":\"0123456789ABCDEF0123456789ABCDEF\",\"offset\":0", "invalid_request"},
        {"session_append", "\"session\":\"../../etc/passwd0123456789abcdef0\",\"offset\":0", "invalid_request"},
        {"session_append", "\"session\":5,\"offset\":0", "invalid_request"},
        {"session_stat", "\"session\":\"\"", "invalid_request"},
        {"session_stat", "", "invalid_request"},
        {"session_stat", "\"session\":\"0123456789abcdef0123456789abcdef\"", "not_found"},
        {"session_finish", "\"session\":null", "invalid_request"},
        {"session_abort", "\"session\":\"0123456789abcdef0123456789abcdef0\"", "invalid_request"},
        {"session_frobnicate", "", "invalid_request"},
    };

    before = session_files(root);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[512];
        json_error_t jerr;
        json_t *h;
        snprintf(text, sizeof text, "{\"op\":\"%s\"%s%s}", cases[i].op, cases[i].header[0] ? "," : "",
                 cases[i].header);
        h = json_loads(text, 0, &jerr);
        CHECK(h != NULL);
        fc_request(c, h, NULL, 0, &r);
        if (!fc_error(&r) || strcmp(fc_error(&r), cases[i].code) != 0)
            fprintf(stderr, "case %s: got %s\n", text, json_dumps(r.h, JSON_COMPACT));
        CHECK_STR_EQ(fc_error(&r), cases[i].code);
        fc_resp_free(&r);
    }
    memset(longmeta, 'm', sizeof longmeta - 1);
    longmeta[sizeof longmeta - 1] = '\0';
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i, s:s}", "filename", "a", "length", 1, "metadata", longmeta),
         NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    /* Metadata of control characters (6 bytes each as JSON: as much as a 64 KiB header carries) is kept whole. */
    {
        char *meta = malloc(10001);
        CHECK(meta != NULL);
        memset(meta, 0x1f, 10000);
        meta[10000] = '\0';
        sreq(c, "session_create", NULL, json_pack("{s:s, s:i, s:s}", "filename", "meta.txt", "length", 1, "metadata", meta),
             NULL, 0, &r);
        CHECK(fc_error(&r) == NULL);
        snprintf(id, sizeof id, "%s", fc_str(&r, "session"));
        fc_resp_free(&r);
        sreq(c, "session_stat", id, NULL, NULL, 0, &r);
        CHECK(fc_error(&r) == NULL);
        CHECK_STR_EQ(fc_str(&r, "metadata"), meta);
        fc_resp_free(&r);
        sreq(c, "session_abort", id, NULL, NULL, 0, &r);
        CHECK(fc_error(&r) == NULL);
        fc_resp_free(&r);
        free(meta);
    }
    /* A body sent with a refused request is skipped, and the next request is in step. */
    sreq(c, "session_append", NULL, json_pack("{s:s, s:i}", "session", "0123456789abcdef0123456789abcdef", "offset", 0),
         "some body", 9, &r);
    CHECK_STR_EQ(fc_error(&r), "not_found");
    fc_resp_free(&r);
    CHECK_INT_EQ(session_files(root), before);

    /* Limits of a real session: past its length, and finishing before the last byte. */
    create(c, "limits.txt", 4, id);
    append(c, id, 0, "12345", 5, NULL, &r);
    CHECK_STR_EQ(fc_error(&r), "too_large");
    fc_resp_free(&r);
    CHECK(!append_ok(c, id, 0, "12", 2));
    sreq(c, "session_finish", id, NULL, NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    append(c, id, 2, "34", 2, json_pack("{s:i}", "offset", -2), &r);
    CHECK_STR_EQ(fc_error(&r), "invalid_request");
    fc_resp_free(&r);
    CHECK(append_ok(c, id, 2, "34", 2));
    expect_content(server.port, "limits.txt", (const uint8_t *)"1234", 4);
    fc_close(c);
}

/* --max-sessions bounds the unfinished uploads kept; finishing or aborting one frees its place. */
static void test_max_sessions(void)
{
    const char *flags[] = {"--max-sessions", "2", NULL};
    struct sg_proc p;
    struct fc_conn *c;
    struct fc_resp r;
    char r2[400], a[64], b[64], d[64];
    snprintf(r2, sizeof r2, "%s/root-max", dir);
    fc_server_start(&p, r2, flags);
    c = fc_open(p.port);
    create(c, "one", 1, a);
    create(c, "two", 1, b);
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i}", "filename", "three", "length", 1), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "busy");
    fc_resp_free(&r);
    CHECK(append_ok(c, a, 0, "1", 1));
    create(c, "three", 1, d);
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i}", "filename", "four", "length", 1), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "busy");
    fc_resp_free(&r);
    sreq(c, "session_abort", b, NULL, NULL, 0, &r);
    CHECK(fc_error(&r) == NULL);
    fc_resp_free(&r);
    create(c, "four", 1, b);
    fc_close(c);
    /* The count is the disk's: after a restart the two open sessions still fill the place. */
    fc_server_stop(&p);
    fc_server_start(&p, r2, flags);
    c = fc_open(p.port);
    sreq(c, "session_create", NULL, json_pack("{s:s, s:i}", "filename", "five", "length", 1), NULL, 0, &r);
    CHECK_STR_EQ(fc_error(&r), "busy");
    fc_resp_free(&r);
    fc_close(c);
    fc_server_stop(&p);
}

/* What a crash leaves in .sessions (a half-written record, data without a record) is removed at start. */
static void test_startup_cleanup(void)
{
    struct sg_proc p;
    struct fc_conn *c;
    char r2[400], path[600], id[64];
    snprintf(r2, sizeof r2, "%s/root-clean", dir);
    fc_server_start(&p, r2, NULL);
    c = fc_open(p.port);
    create(c, "kept.txt", 10, id);
    CHECK(!append_ok(c, id, 0, "kept", 4));
    fc_close(c);
    fc_server_stop(&p);
    snprintf(path, sizeof path, "%s/.sessions/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.data", r2);
    fc_write_file(path, "orphan", 6);
    snprintf(path, sizeof path, "%s/.sessions/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.info.tmp", r2);
    fc_write_file(path, "{\"v\":1", 6);
    snprintf(path, sizeof path, "%s/.sessions/cccccccccccccccccccccccccccccccc.info", r2);
    {
        const char *record = "{\"v\":1,\"filename\":\"x\",\"created\":0}";
        fc_write_file(path, record, strlen(record));
    }
    snprintf(path, sizeof path, "%s/.sessions/keep-me", r2);
    fc_write_file(path, "not ours", 8);
    fc_server_start(&p, r2, NULL);
    CHECK_INT_EQ(session_files(r2), 3); /* kept.txt's data and record, and keep-me */
    CHECK_INT_EQ(stat_offset(p.port, id, NULL), 4);
    fc_server_stop(&p);

    /* A .sessions symlink planted in the root would send uploads elsewhere: the server refuses to start. */
    {
        char r3[400], outside[400], link[500], err_path[500];
        const char *argv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", r3, NULL};
        char *err;
        size_t len;
        snprintf(r3, sizeof r3, "%s/root-planted", dir);
        snprintf(outside, sizeof outside, "%s/elsewhere", dir);
        snprintf(link, sizeof link, "%s/.sessions", r3);
        snprintf(err_path, sizeof err_path, "%s/planted.err", dir);
        CHECK(mkdir(r3, 0755) == 0 && mkdir(outside, 0755) == 0);
        CHECK(symlink(outside, link) == 0);
        CHECK_INT_EQ(fc_run(argv, NULL, err_path), 1);
        err = (char *)fc_read_file(err_path, &len);
        CHECK(err != NULL && memmem(err, len, "not a symlink", 13) != NULL);
        free(err);
    }
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    fc_server_start(&server, root, NULL);
    RUN_TEST(test_lifecycle);
    RUN_TEST(test_back_to_back);
    RUN_TEST(test_offset_conflict);
    RUN_TEST(test_concurrent_append_locked);
    RUN_TEST(test_checksum_mismatch);
    RUN_TEST(test_cut_keeps_arrived_bytes);
    RUN_TEST(test_abort);
    RUN_TEST(test_deferred_length);
    RUN_TEST(test_create_with_upload);
    RUN_TEST(test_conditions);
    RUN_TEST(test_bad_input);
    RUN_TEST(test_backend_killed_and_restarted);
    RUN_TEST(test_expiry_frees_storage);
    RUN_TEST(test_max_sessions);
    RUN_TEST(test_startup_cleanup);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
