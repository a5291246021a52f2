/* fclient.c - the integration tests' file-service client and helpers (see fclient.h). */
#include "fclient.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "sockgate/error.h"
#include "sockgate/net.h"

#define KEEP_MAX ((size_t)64 << 20)
#define IO_TIMEOUT_MS 60000

struct fc_conn *fc_open(uint16_t port)
{
    struct fc_conn *c = calloc(1, sizeof *c);
    struct sg_addr addr;
    char text[64], err[256];
    CHECK(c != NULL);
    c->rd = malloc(sizeof *c->rd);
    CHECK(c->rd != NULL);
    snprintf(text, sizeof text, "127.0.0.1:%u", (unsigned)port);
    CHECK(sg_addr_parse(text, &addr, err, sizeof err) == SG_OK);
    if (sg_connect(&addr, SOCK_STREAM, 5000, &c->fd, err, sizeof err) != SG_OK) {
        fprintf(stderr, "connect %s: %s\n", text, err);
        exit(1);
    }
    sg_frame_reader_init(c->rd, c->fd, 0);
    return c;
}

void fc_close(struct fc_conn *c)
{
    if (!c)
        return;
    sg_frame_reader_free(c->rd);
    free(c->rd);
    close(c->fd);
    free(c);
}

int fc_send(struct fc_conn *c, json_t *header, const void *body, size_t len)
{
    int rc = sg_frame_send(c->fd, header, body, len, sg_now_ms() + IO_TIMEOUT_MS);
    json_decref(header);
    return rc;
}

int fc_recv(struct fc_conn *c, struct fc_resp *r, size_t keep_max)
{
    enum sg_frame_event ev = SG_FRAME_NEED_MORE;
    const uint8_t *chunk;
    size_t len;
    struct sg_hash h;
    int rc;
    memset(r, 0, sizeof *r);
    CHECK(sg_hash_init(&h, 0) == SG_OK);
    while (ev != SG_FRAME_END) {
        rc = sg_frame_reader_next(c->rd, &ev, &chunk, &len, sg_now_ms() + IO_TIMEOUT_MS);
        if (rc != SG_OK) {
            sg_hash_free(&h);
            return rc;
        }
        if (ev == SG_FRAME_HEADER) {
            uint64_t size = sg_frame_decoder_body_size(&c->rd->dec);
            r->h = json_incref(sg_frame_decoder_header(&c->rd->dec));
            if (size <= keep_max) {
                r->body = malloc(size ? size : 1);
                CHECK(r->body != NULL);
            }
        } else if (ev == SG_FRAME_BODY) {
            sg_hash_update(&h, chunk, len);
            if (r->body)
                memcpy(r->body + r->len, chunk, len);
            r->len += len;
        }
    }
    sg_hash_final(&h, r->sha256, NULL);
    return SG_OK;
}

void fc_request(struct fc_conn *c, json_t *header, const void *body, size_t len, struct fc_resp *r)
{
    int rc = fc_send(c, header, body, len);
    if (rc != SG_OK) {
        fprintf(stderr, "fc_request: send failed: %s\n", sg_strerror(rc));
        exit(1);
    }
    rc = fc_recv(c, r, KEEP_MAX);
    if (rc != SG_OK) {
        fprintf(stderr, "fc_request: no response: %s\n", sg_strerror(rc));
        exit(1);
    }
}

void fc_resp_free(struct fc_resp *r)
{
    json_decref(r->h);
    free(r->body);
    memset(r, 0, sizeof *r);
}

const char *fc_error(const struct fc_resp *r)
{
    json_t *e = json_object_get(r->h, "error");
    return e ? json_string_value(json_object_get(e, "code")) : NULL;
}

void fc_upload(struct fc_conn *c, const char *name, const void *buf, size_t len, json_t *extra, struct fc_resp *r)
{
    json_t *h = json_pack("{s:s, s:s, s:I}", "op", "upload", "filename", name, "total_size", (json_int_t)len);
    CHECK(h != NULL);
    if (extra) {
        json_object_update(h, extra);
        json_decref(extra);
    }
    fc_request(c, h, buf, len, r);
}

void fc_download(struct fc_conn *c, const char *name, int64_t offset, int64_t length, struct fc_resp *r)
{
    json_t *h = json_pack("{s:s, s:s, s:I}", "op", "download", "filename", name, "offset", (json_int_t)offset);
    CHECK(h != NULL);
    if (length >= 0)
        json_object_set_new(h, "length", json_integer(length));
    fc_request(c, h, NULL, 0, r);
}

int64_t fc_int(const struct fc_resp *r, const char *key)
{
    json_t *v = json_object_get(r->h, key);
    return json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
}

const char *fc_str(const struct fc_resp *r, const char *key)
{
    const char *s = json_string_value(json_object_get(r->h, key));
    return s ? s : "";
}

void fc_sha256(const void *buf, size_t len, char hex[SG_SHA256_HEX])
{
    struct sg_hash h;
    CHECK(sg_hash_init(&h, 0) == SG_OK);
    sg_hash_update(&h, buf, len);
    sg_hash_final(&h, hex, NULL);
}

void fc_fill(uint8_t *buf, size_t len, uint64_t seed)
{
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (size_t i = 0; i < len; i++) {
        /* xorshift64: cheap, and different seeds give different bytes everywhere */
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf[i] = (uint8_t)(x >> 32);
    }
}

void fc_write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    CHECK(sg_write_all(fd, buf, len, -1) == SG_OK);
    CHECK(close(fd) == 0);
}

uint8_t *fc_read_file(const char *path, size_t *len)
{
    struct stat sb;
    uint8_t *buf;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    *len = 0;
    if (fd < 0)
        return NULL;
    if (fstat(fd, &sb) != 0 || !(buf = malloc((size_t)sb.st_size + 1))) {
        close(fd);
        return NULL;
    }
    if (sb.st_size > 0 && sg_read_full(fd, buf, (size_t)sb.st_size, -1) != SG_OK) {
        free(buf);
        close(fd);
        return NULL;
    }
    close(fd);
    *len = (size_t)sb.st_size;
    return buf;
}

int fc_exists(const char *path)
{
    struct stat sb;
    return lstat(path, &sb) == 0;
}

int fc_count_prefix(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

void fc_server_start(struct sg_proc *p, const char *root, const char *const *extra)
{
    const char *argv[32] = {"sockgate-file", "--listen", "127.0.0.1:0", "--root", root};
    int n = 5;
    for (int i = 0; extra && extra[i]; i++) {
        CHECK(n < 30);
        argv[n++] = extra[i];
    }
    argv[n] = NULL;
    /* The harness kills it at exit unless it was stopped: a failed CHECK never leaves one behind. */
    CHECK(sg_proc_start(p, argv, 10000) == 0);
}

void fc_server_stop(struct sg_proc *p)
{
    int status = sg_proc_stop(p, 10000);
    if (status != 0) {
        fprintf(stderr, "sockgate-file exited with status %d, not 0\n", status);
        exit(1);
    }
}

int fc_run(const char *const argv[], const char *out_path, const char *err_path)
{
    char bin[512];
    int status = 0;
    pid_t pid;
    sg_test_bin(argv[0], bin, sizeof bin);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int out = open(out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        if (out < 0 || err < 0)
            _exit(126);
        dup2(out, 1);
        dup2(err, 2);
        if (strchr(argv[0], '/'))
            execv(argv[0], (char *const *)argv);
        else if (strncmp(argv[0], "sockgate", 8) == 0)
            execv(bin, (char *const *)argv);
        else
            execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        CHECK(errno == EINTR);
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/* The state nftw's callback appends to (nftw has no user pointer). */
static struct {
    char *buf;
    size_t len;
    size_t cap;
    const char *skip;
    size_t root_len;
} snap;

static void snap_append(const char *line)
{
    size_t n = strlen(line);
    if (snap.len + n + 1 > snap.cap) {
        snap.cap = (snap.len + n + 1) * 2;
        snap.buf = realloc(snap.buf, snap.cap);
        CHECK(snap.buf != NULL);
    }
    memcpy(snap.buf + snap.len, line, n + 1);
    snap.len += n;
}

static int snap_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    char line[8192], sha[SG_SHA256_HEX] = "-";
    (void)flag;
    if (snap.skip && strncmp(path, snap.skip, strlen(snap.skip)) == 0 &&
        (path[strlen(snap.skip)] == '\0' || path[strlen(snap.skip)] == '/'))
        return 0;
    if (S_ISREG(sb->st_mode)) {
        size_t len;
        uint8_t *data = fc_read_file(path, &len);
        if (data)
            fc_sha256(data, len, sha);
        free(data);
    }
    snprintf(line, sizeof line, "%s mode=%o size=%lld ino=%llu mtime=%lld.%09ld sha=%s\n", path + snap.root_len,
             (unsigned)sb->st_mode, (long long)sb->st_size, (unsigned long long)sb->st_ino,
             (long long)sb->st_mtim.tv_sec, (long)sb->st_mtim.tv_nsec, sha);
    (void)ftw;
    snap_append(line);
    return 0;
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

char *fc_tree_snapshot(const char *dir, const char *skip)
{
    char *sorted, **lines, *save = NULL;
    size_t n = 0, cap = 64, off = 0;
    memset(&snap, 0, sizeof snap);
    snap.skip = skip;
    snap.root_len = strlen(dir);
    snap_append("");
    CHECK(nftw(dir, snap_entry, 16, FTW_PHYS) == 0);
    lines = malloc(cap * sizeof *lines);
    CHECK(lines != NULL);
    for (char *l = strtok_r(snap.buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (n == cap) {
            cap *= 2;
            lines = realloc(lines, cap * sizeof *lines);
            CHECK(lines != NULL);
        }
        lines[n++] = l;
    }
    qsort(lines, n, sizeof *lines, cmp_lines);
    sorted = malloc(snap.len + n + 1);
    CHECK(sorted != NULL);
    for (size_t i = 0; i < n; i++)
        off += (size_t)sprintf(sorted + off, "%s\n", lines[i]);
    sorted[off] = '\0';
    free(lines);
    free(snap.buf);
    memset(&snap, 0, sizeof snap);
    return sorted;
}
