/*
 * test_file_hostile.c - hostile names never reach outside the root. A
 * sentinel tree sits next to the root (and holds the targets of symlinks
 * planted inside it); every name is tried with upload, download, stat and
 * delete, and afterwards that tree must be byte-for-byte what it was, with
 * nothing new in it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fclient.h"
#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/text.h"

enum kind {
    REFUSED, /* invalid_name (or protocol_error when JSON itself cannot carry it) */
    LITERAL, /* a valid flat name that merely looks like traversal: stored as is, inside the root */
    PLANTED, /* a symlink, FIFO or loop planted in the root: never followed */
    DIRENT,  /* a real directory planted in the root: never replaced */
};

struct hostile {
    const char *name;
    size_t len; /* 0: strlen(name) */
    enum kind kind;
};

static char dir[256], root[300], outside[300];
static struct sg_proc server;
static struct fc_conn *conn;

/* Encodes a JSON string for name, raw bytes when it is not UTF-8 (the server must cope either way). */
static size_t json_name(char *out, size_t cap, const char *name, size_t len)
{
    size_t n;
    if (sg_utf8_valid(name, len)) {
        json_t *s = json_stringn(name, len);
        CHECK(s != NULL);
        n = json_dumpb(s, out, cap, JSON_ENCODE_ANY);
        json_decref(s);
        CHECK(n > 0 && n < cap);
        return n;
    }
    CHECK(len + 2 < cap);
    out[0] = '"';
    memcpy(out + 1, name, len);
    out[len + 1] = '"';
    return len + 2;
}

/*
 * Sends op on name (upload carries body) and returns the error code (a copy
 * that outlives *r), or NULL on success; *r keeps the reply.
 */
static const char *attempt(const char *op, const char *name, size_t len, const char *body, struct fc_resp *r)
{
    static char copy[64];
    char header[9000], quoted[8500];
    size_t qn = json_name(quoted, sizeof quoted, name, len), blen = body ? strlen(body) : 0;
    int n = snprintf(header, sizeof header, "{\"op\":\"%s\",\"total_size\":%zu,\"filename\":%.*s}", op, blen, (int)qn,
                     quoted);
    uint8_t *frame = malloc((size_t)n + 4 + blen);
    const char *code;
    CHECK(frame != NULL);
    frame[0] = (uint8_t)n;
    frame[1] = (uint8_t)(n >> 8);
    frame[2] = (uint8_t)(n >> 16);
    frame[3] = (uint8_t)(n >> 24);
    memcpy(frame + 4, header, (size_t)n);
    memcpy(frame + 4 + n, body ? body : "", blen);
    CHECK(sg_write_all(conn->fd, frame, (size_t)n + 4 + blen, sg_now_ms() + 10000) == SG_OK);
    free(frame);
    CHECK(fc_recv(conn, r, 1 << 20) == SG_OK);
    code = fc_error(r);
    if (code) {
        snprintf(copy, sizeof copy, "%s", code);
        code = copy;
    }
    if (code && strcmp(code, "protocol_error") == 0) {
        /* The server closes after a protocol error: start over on a new connection. */
        fc_close(conn);
        conn = fc_open(server.port);
    }
    return code;
}

static void plant(void)
{
    char path[400], target[400];
    snprintf(outside, sizeof outside, "%s/outside", dir);
    CHECK(mkdir(outside, 0755) == 0);
    snprintf(path, sizeof path, "%s/secret", outside);
    fc_write_file(path, "the sentinel: never read, written or deleted", 44);
    snprintf(path, sizeof path, "%s/sentinel", dir);
    fc_write_file(path, "a sentinel next to the root", 27);
    CHECK(mkdir(root, 0755) == 0);
    snprintf(target, sizeof target, "%s/secret", outside);
    snprintf(path, sizeof path, "%s/link_out", root);
    CHECK(symlink(target, path) == 0);
    snprintf(path, sizeof path, "%s/rel_link", root);
    CHECK(symlink("../outside/secret", path) == 0);
    snprintf(path, sizeof path, "%s/link_dir", root);
    CHECK(symlink(outside, path) == 0);
    snprintf(path, sizeof path, "%s/loop", root);
    CHECK(symlink("loop", path) == 0);
    snprintf(target, sizeof target, "%s/created-through-link", outside);
    snprintf(path, sizeof path, "%s/dangling", root);
    CHECK(symlink(target, path) == 0);
    snprintf(path, sizeof path, "%s/fifo", root);
    CHECK(mkfifo(path, 0644) == 0);
    snprintf(path, sizeof path, "%s/subdir", root);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof path, "%s/subdir/inner", root);
    fc_write_file(path, "inside a planted directory", 26);
}

/* Runs every operation on one name and checks the outcome its kind calls for. */
static void try_name(const struct hostile *h, int index)
{
    size_t len = h->len ? h->len : strlen(h->name);
    char body[64], path[8600];
    struct fc_resp r;
    const char *code;
    struct stat sb;

    snprintf(body, sizeof body, "PWNED by hostile name #%d", index);
    code = attempt("download", h->name, len, NULL, &r);
    if (h->kind == LITERAL)
        CHECK_STR_EQ(code, "not_found");
    else if (h->kind == REFUSED)
        CHECK(code && (strcmp(code, "invalid_name") == 0 || strcmp(code, "protocol_error") == 0));
    else
        CHECK_STR_EQ(code, "not_found");
    CHECK_INT_EQ(r.len, 0);
    fc_resp_free(&r);
    code = attempt("stat", h->name, len, NULL, &r);
    CHECK(code != NULL);
    fc_resp_free(&r);
    code = attempt("delete", h->name, len, NULL, &r);
    CHECK(code != NULL);
    CHECK(strcmp(code, "invalid_name") == 0 || strcmp(code, "protocol_error") == 0 || strcmp(code, "not_found") == 0);
    fc_resp_free(&r);

    code = attempt("upload", h->name, len, body, &r);
    fc_resp_free(&r);
    switch (h->kind) {
    case REFUSED:
        CHECK(code && (strcmp(code, "invalid_name") == 0 || strcmp(code, "protocol_error") == 0));
        break;
    case DIRENT:
        CHECK_STR_EQ(code, "invalid_name");
        snprintf(path, sizeof path, "%s/%s", root, h->name);
        CHECK(lstat(path, &sb) == 0 && S_ISDIR(sb.st_mode));
        break;
    case LITERAL:
    case PLANTED:
        /* Stored inside the root under exactly that name; a planted link is replaced, not followed. */
        CHECK(code == NULL);
        snprintf(path, sizeof path, "%s/%.*s", root, (int)len, h->name);
        CHECK(lstat(path, &sb) == 0 && S_ISREG(sb.st_mode));
        CHECK_INT_EQ(sb.st_size, strlen(body));
        code = attempt("download", h->name, len, NULL, &r);
        CHECK(code == NULL && r.len == strlen(body) && memcmp(r.body, body, r.len) == 0);
        fc_resp_free(&r);
        code = attempt("delete", h->name, len, NULL, &r);
        CHECK(code == NULL);
        fc_resp_free(&r);
        CHECK(lstat(path, &sb) != 0 && errno == ENOENT);
        break;
    }
}

static void test_hostile_names(void)
{
    static char abs_secret[400], abs_escape[400], abs_dir_new[400], long256[257], long4096[4097], long255[256];
    char *before, *after;
    int n = 0;
    memset(long256, 'a', 256);
    memset(long4096, 'a', 4096);
    memset(long255, 'b', 255);
    snprintf(abs_secret, sizeof abs_secret, "%s/secret", outside);
    snprintf(abs_escape, sizeof abs_escape, "%s/escape", dir);
    snprintf(abs_dir_new, sizeof abs_dir_new, "%s/new-file", outside);
    {
        const struct hostile cases[] = {
            {"", 0, REFUSED},
            {".", 0, REFUSED},
            {"..", 0, REFUSED},
            {"...", 0, REFUSED},
            {"../escape", 0, REFUSED},
            {"../../escape", 0, REFUSED},
            {"../sentinel", 0, REFUSED},
            {"../outside/secret", 0, REFUSED},
            {"..\\escape", 0, REFUSED},
            {"..\\..\\sentinel", 0, REFUSED},
            {abs_secret, 0, REFUSED},
            {abs_escape, 0, REFUSED},
            {abs_dir_new, 0, REFUSED},
            {"sub/../../escape", 0, REFUSED},
            {"./escape", 0, REFUSED},
            {".escape", 0, REFUSED},
            {"escape/", 0, REFUSED},
            {"subdir/inner", 0, REFUSED},
            {"link_dir/secret", 0, REFUSED},
            {"link_dir/new-file", 0, REFUSED},
            {"C:\\escape", 0, REFUSED},
            {"\\\\server\\share", 0, REFUSED},
            {".meta", 0, REFUSED},
            {".upload-0000000000000000", 0, REFUSED},
            {"a\0/../../escape", 15, REFUSED},
            {"\0", 1, REFUSED},
            {"..\xc0\xaf" "escape", 0, REFUSED},
            {"\xc0\xae\xc0\xae\xc0\xaf" "escape", 0, REFUSED},
            {"\xe0\x80\xae\xe0\x80\xae\xe0\x80\xaf" "escape", 0, REFUSED},
            {"\xff\xfe", 0, REFUSED},
            {"esc\x1b]0;title\x07", 0, REFUSED},
            {"new\nline", 0, REFUSED},
            {"tab\there", 0, REFUSED},
            {"del\x7f", 0, REFUSED},
            {"c1\xc2\x85", 0, REFUSED},
            {long256, 0, REFUSED},
            {long4096, 0, REFUSED},
            {"%2e%2e%2fescape", 0, LITERAL},
            {"%2e%2e%5c%2e%2e%5csentinel", 0, LITERAL},
            {"\xef\xbc\x8e\xef\xbc\x8e\xef\xbc\x8f" "escape", 0, LITERAL},
            {"\xe2\x80\xa5\xe2\x88\x95" "escape", 0, LITERAL},
            {"escape%00.txt", 0, LITERAL},
            {"~", 0, LITERAL},
            {long255, 0, LITERAL},
            {"link_out", 0, PLANTED},
            {"rel_link", 0, PLANTED},
            {"link_dir", 0, PLANTED},
            {"loop", 0, PLANTED},
            {"dangling", 0, PLANTED},
            {"fifo", 0, PLANTED},
            {"subdir", 0, DIRENT},
        };
        before = fc_tree_snapshot(dir, root);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            try_name(&cases[i], (int)i);
            n++;
        }
    }
    CHECK(n >= 30);
    after = fc_tree_snapshot(dir, root);
    if (strcmp(before, after) != 0) {
        fprintf(stderr, "the tree outside the root changed:\n--- before\n%s--- after\n%s", before, after);
        exit(1);
    }
    /* Nothing half-done inside the root either, and the planted directory's content is untouched. */
    CHECK_INT_EQ(fc_count_prefix(root, ".upload-"), 0);
    {
        char path[400];
        size_t len;
        uint8_t *inner;
        snprintf(path, sizeof path, "%s/subdir/inner", root);
        inner = fc_read_file(path, &len);
        CHECK(inner && len == 26 && memcmp(inner, "inside a planted directory", 26) == 0);
        free(inner);
    }
    fprintf(stderr, "%d hostile names tried with upload, download, stat and delete\n", n);
    free(before);
    free(after);
}

static void test_system_paths_not_served(void)
{
    /* Read-only probes only: the test may run as root, and these must never be written even by a bug. */
    const char *names[] = {"/etc/passwd", "../../../../../../etc/passwd", "/proc/self/environ", "/dev/zero"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        struct fc_resp r;
        const char *code = attempt("download", names[i], strlen(names[i]), NULL, &r);
        CHECK(code != NULL);
        CHECK_INT_EQ(r.len, 0);
        fc_resp_free(&r);
        code = attempt("stat", names[i], strlen(names[i]), NULL, &r);
        CHECK_STR_EQ(code, "invalid_name");
        fc_resp_free(&r);
    }
}

static void test_planted_meta_symlink_refused(void)
{
    /* A .meta symlink planted before start-up must not become the place cache records are written. */
    char root2[400], meta[420], err_path[420], *before, *after, *text;
    const char *argv[] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", root2, NULL};
    size_t len;
    snprintf(root2, sizeof root2, "%s/root2", dir);
    CHECK(mkdir(root2, 0755) == 0);
    snprintf(meta, sizeof meta, "%s/.meta", root2);
    CHECK(symlink(outside, meta) == 0);
    before = fc_tree_snapshot(outside, NULL);
    snprintf(err_path, sizeof err_path, "/tmp/sockgate-hostile-%d.err", (int)getpid());
    CHECK_INT_EQ(fc_run(argv, NULL, err_path), 1);
    text = (char *)fc_read_file(err_path, &len);
    CHECK(text != NULL);
    text[len] = '\0';
    CHECK(strstr(text, ".meta") != NULL);
    unlink(err_path);
    after = fc_tree_snapshot(outside, NULL);
    CHECK_STR_EQ(before, after);
    free(text);
    free(before);
    free(after);
}

int main(void)
{
    CHECK(sg_test_tmpdir(dir, sizeof dir) == 0);
    snprintf(root, sizeof root, "%s/root", dir);
    plant();
    fc_server_start(&server, root, NULL);
    conn = fc_open(server.port);
    RUN_TEST(test_hostile_names);
    RUN_TEST(test_system_paths_not_served);
    RUN_TEST(test_planted_meta_symlink_refused);
    fc_close(conn);
    fc_server_stop(&server);
    sg_test_rmtree(dir);
    return TESTS_DONE();
}
