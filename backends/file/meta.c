/*
 * meta.c - the sha256 cache: one record per name in the root's hidden .meta
 * directory, so list and stat never read whole files. A record names the
 * inode, size, mtime and ctime it was computed for; any change to the file
 * makes it stale and the hash is computed again on demand. See
 * docs/internals/file.md for why this and not extended attributes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "name.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "store.h"

#define RECORD_MAX 256
#define META_TEMP ".tmp-record"
#define HASH_CHUNK 65536
/*
 * A hash read from a file changed this recently before the reading began is
 * not cached. A file's timestamps only move when the clock ticks (a jiffy on
 * kernels before 6.13, up to 2 s on some filesystems), so a change made right
 * after the hash could leave size, mtime and ctime as recorded and the stale
 * hash would be served for good: git's "racy clean" problem, solved the same
 * way. Such a file is hashed again on each request until it is older.
 */
#define RACY_WINDOW_NS (INT64_C(2) * 1000 * 1000 * 1000)

/* Writes the record line for hex and sb into buf; returns its length. */
static int record_format(char *buf, size_t cap, const char *hex, const struct stat *sb)
{
    return snprintf(buf, cap, "v1 %s %" PRIu64 " %" PRIu64 " %lld %ld %lld %ld\n", hex, (uint64_t)sb->st_size,
                    (uint64_t)sb->st_ino, (long long)sb->st_mtim.tv_sec, (long)sb->st_mtim.tv_nsec,
                    (long long)sb->st_ctim.tv_sec, (long)sb->st_ctim.tv_nsec);
}

/* Returns 1 and copies the hash when name's record describes exactly the file in sb. */
static int record_lookup(struct file_store *st, const char *name, const struct stat *sb, char hex[SG_SHA256_HEX])
{
    char have[RECORD_MAX + 1], want[RECORD_MAX], found[SG_SHA256_HEX];
    ssize_t n;
    int fd = openat(st->meta_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return 0;
    n = read(fd, have, RECORD_MAX);
    close(fd);
    if (n <= 0)
        return 0;
    have[n] = '\0';
    /* The record is compared whole with the one sb would give, hash field aside. */
    if (sscanf(have, "v1 %64[0-9a-f]", found) != 1 || strlen(found) != SG_SHA256_HEX - 1)
        return 0;
    record_format(want, sizeof want, found, sb);
    if (strcmp(have, want) != 0)
        return 0;
    memcpy(hex, found, SG_SHA256_HEX);
    return 1;
}

void file_store_meta_put(struct file_store *st, const char *name, const struct stat *sb, const char *hex)
{
    char rec[RECORD_MAX];
    struct stat now;
    int len = record_format(rec, sizeof rec, hex, sb), fd = -1;

    pthread_mutex_lock(&st->meta_lock);
    /*
     * Another upload of the same name may have replaced the file since sb
     * was taken; a record for the old inode would only be stale, but
     * skipping it saves a needless recomputation.
     */
    if (fstatat(st->root_fd, name, &now, AT_SYMLINK_NOFOLLOW) != 0 || now.st_ino != sb->st_ino ||
        now.st_dev != sb->st_dev)
        goto out;
    fd = openat(st->meta_fd, META_TEMP, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out;
    /* No fsync: a record lost in a crash is only stale, and stale records are recomputed. */
    if (write(fd, rec, (size_t)len) != len) {
        close(fd);
        unlinkat(st->meta_fd, META_TEMP, 0); /* best effort: a partial record never matches */
        goto out;
    }
    close(fd);
    if (renameat(st->meta_fd, META_TEMP, st->meta_fd, name) != 0)
        unlinkat(st->meta_fd, META_TEMP, 0); /* best effort: the cache is optional */
out:
    pthread_mutex_unlock(&st->meta_lock);
}

void file_store_meta_drop(struct file_store *st, const char *name)
{
    pthread_mutex_lock(&st->meta_lock);
    unlinkat(st->meta_fd, name, 0); /* best effort: a record without its file is never matched */
    pthread_mutex_unlock(&st->meta_lock);
}

/* Hashes the whole file fd with pread (the offset of fd is left alone); SG_OK or an sg_err value. */
static int hash_fd(int fd, char hex[SG_SHA256_HEX])
{
    struct sg_hash h;
    uint8_t *buf = malloc(HASH_CHUNK);
    off_t off = 0;
    int rc = SG_ERR_NOMEM;
    if (!buf)
        return rc;
    rc = sg_hash_init(&h, 0);
    if (rc != SG_OK)
        goto out;
    for (;;) {
        ssize_t n = pread(fd, buf, HASH_CHUNK, off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = file_store_errno(errno);
            sg_hash_free(&h);
            goto out;
        }
        if (n == 0)
            break;
        sg_hash_update(&h, buf, (size_t)n);
        off += n;
    }
    sg_hash_final(&h, hex, NULL);
    rc = SG_OK;
out:
    free(buf);
    return rc;
}

/* Returns 1 when sb's last change (ctime) is less than RACY_WINDOW_NS before when, or after it. */
static int changed_recently(const struct stat *sb, const struct timespec *when)
{
    int64_t changed = (int64_t)sb->st_ctim.tv_sec * 1000000000 + sb->st_ctim.tv_nsec;
    int64_t now = (int64_t)when->tv_sec * 1000000000 + when->tv_nsec;
    return now - changed < RACY_WINDOW_NS;
}

/* Returns 1 when a and b describe the same unchanged file. */
static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_ino == b->st_ino && a->st_dev == b->st_dev && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
           a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

int file_store_sha256(struct file_store *st, const char *name, int fd, const struct stat *sb,
                      char hex[SG_SHA256_HEX])
{
    struct stat opened, after;
    struct timespec started;
    int own_fd = -1, rc;

    if (record_lookup(st, name, sb, hex))
        return SG_OK;
    if (fd < 0) {
        rc = file_store_open_read(st, name, &own_fd, &opened);
        if (rc != SG_OK)
            return rc;
        if (!same_file(&opened, sb)) {
            close(own_fd);
            return SG_ERR_NOT_FOUND; /* replaced meanwhile: the caller's view is gone */
        }
        fd = own_fd;
    }
    clock_gettime(CLOCK_REALTIME, &started);
    rc = hash_fd(fd, hex);
    /* Only a hash of a file that did not change while it was read, nor just before, is worth keeping. */
    if (rc == SG_OK && fstat(fd, &after) == 0 && same_file(&after, sb) && !changed_recently(sb, &started))
        file_store_meta_put(st, name, sb, hex);
    if (own_fd >= 0)
        close(own_fd);
    return rc;
}

void file_store_meta_sweep(struct file_store *st)
{
    int dfd = openat(st->meta_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    unsigned removed = 0;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return;
    }
    while ((e = readdir(d)) != NULL) {
        struct stat sb;
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (e->d_name[0] != '.' && file_name_check(e->d_name, strlen(e->d_name), NULL, 0) == SG_OK &&
            file_store_stat(st, e->d_name, &sb) != SG_ERR_NOT_FOUND)
            continue;
        /* A temporary record, or one whose file is gone. */
        if (unlinkat(st->meta_fd, e->d_name, 0) == 0)
            removed++;
    }
    closedir(d);
    if (removed)
        sg_info("removed %u stale sha256 cache record%s", removed, removed == 1 ? "" : "s");
}
