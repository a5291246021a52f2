/*
 * list.c - the list operation: every stored file with name, size, mtime and
 * sha256, sorted by name, as a JSON array in the response body (a long list
 * never meets the header size limit).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "name.h"
#include "sockgate/error.h"
#include "sockgate/log.h"

/* The most files one list answers, and the most bytes its body may take: both bound the memory it uses. */
#define LIST_MAX_ENTRIES 100000u
#define LIST_MAX_BODY (UINT64_C(64) << 20)

struct entry {
    char *name;
    struct stat sb;
};

struct listing {
    struct entry *v;
    size_t n;
    size_t cap;
};

static void listing_free(struct listing *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->v[i].name);
    free(l->v);
    memset(l, 0, sizeof *l);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct entry *)a)->name, ((const struct entry *)b)->name);
}

/* Collects the regular files with valid names; SG_OK, SG_ERR_TOO_LARGE, SG_ERR_NOMEM or SG_ERR_SYS. */
static int collect(struct file_store *st, struct listing *l)
{
    int dfd = openat(st->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = SG_OK;
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return SG_ERR_SYS;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        /* Entries made behind the service's back with names it would refuse are not its files. */
        if (file_name_check(e->d_name, strlen(e->d_name), NULL, 0) != SG_OK || file_store_stat(st, e->d_name, &sb) != SG_OK)
            continue;
        if (l->n == LIST_MAX_ENTRIES) {
            rc = SG_ERR_TOO_LARGE;
            break;
        }
        if (l->n == l->cap) {
            size_t cap = l->cap ? 2 * l->cap : 64;
            struct entry *v = realloc(l->v, cap * sizeof *v);
            if (!v) {
                rc = SG_ERR_NOMEM;
                break;
            }
            l->v = v;
            l->cap = cap;
        }
        l->v[l->n].name = strdup(e->d_name);
        if (!l->v[l->n].name) {
            rc = SG_ERR_NOMEM;
            break;
        }
        l->v[l->n++].sb = sb;
    }
    closedir(d);
    if (rc == SG_OK && l->n > 1) /* qsort's array may not be NULL, even for 0 items */
        qsort(l->v, l->n, sizeof *l->v, by_name);
    return rc;
}

/* A growable byte buffer with a ceiling. */
struct body {
    char *p;
    size_t len;
    size_t cap;
};

static int body_append(struct body *b, const char *s, size_t n)
{
    if (b->len + n > LIST_MAX_BODY)
        return SG_ERR_TOO_LARGE;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n)
            cap *= 2;
        p = realloc(b->p, cap);
        if (!p)
            return SG_ERR_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    return SG_OK;
}

/* Appends one entry's JSON object (with a leading comma after the first). */
static int body_entry(struct body *b, const struct entry *e, const char *sha, int first)
{
    json_t *o = json_pack("{s:s, s:I, s:I, s:s}", "name", e->name, "size", (json_int_t)e->sb.st_size, "mtime_ms",
                          (json_int_t)((int64_t)e->sb.st_mtim.tv_sec * 1000 + e->sb.st_mtim.tv_nsec / 1000000),
                          "sha256", sha);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    int rc = text ? SG_OK : SG_ERR_NOMEM;
    if (rc == SG_OK && !first)
        rc = body_append(b, ",", 1);
    if (rc == SG_OK)
        rc = body_append(b, text, strlen(text));
    free(text);
    json_decref(o);
    return rc;
}

int file_op_list(struct file_conn *c, const json_t *req, uint64_t body_size)
{
    struct file_store *st = &c->srv->store;
    struct listing l = {0};
    struct body b = {0};
    size_t count = 0;
    int64_t start = sg_now_ms();
    int rc, outcome = file_conn_skip_body(c, body_size);
    json_t *resp;

    (void)req;
    if (outcome != FILE_NEXT)
        return outcome;
    rc = collect(st, &l);
    if (rc == SG_OK)
        rc = body_append(&b, "[", 1);
    for (size_t i = 0; rc == SG_OK && i < l.n; i++) {
        char sha[SG_SHA256_HEX];
        int hrc = file_store_sha256(st, l.v[i].name, -1, &l.v[i].sb, sha);
        if (hrc == SG_ERR_NOT_FOUND)
            continue; /* deleted or replaced while we listed: it is simply not in this list */
        rc = hrc;
        if (rc == SG_OK)
            rc = body_entry(&b, &l.v[i], sha, count == 0);
        count++;
    }
    if (rc == SG_OK)
        rc = body_append(&b, "]", 1);
    if (rc != SG_OK) {
        outcome = file_conn_reply_error(c, rc, "%s",
                                        rc == SG_ERR_TOO_LARGE ? "too many files to list (at most 100000 or 64 MiB of JSON)"
                                                               : sg_strerror(rc));
        goto out;
    }
    resp = json_pack("{s:I, s:I}", "count", (json_int_t)count, "total_size", (json_int_t)b.len);
    if (resp && c->id)
        json_object_set(resp, "id", (json_t *)c->id);
    if (resp)
        file_conn_mark_closing(c, resp);
    rc = resp ? sg_frame_send(c->fd, resp, b.p, b.len, c->srv->io_timeout_ms < 0 ? -1 : sg_now_ms() + c->srv->io_timeout_ms)
              : SG_ERR_NOMEM;
    json_decref(resp);
    outcome = rc == SG_OK ? FILE_NEXT : FILE_CLOSE;
out:
    listing_free(&l);
    free(b.p);
    file_conn_log(c, "list", NULL, b.len, rc, start);
    return outcome;
}
