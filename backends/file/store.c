/* store.c - the root directory: opening it, temporary uploads, atomic commits, reads and deletes. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/text.h"

#define TEMP_ATTEMPTS 8

int file_store_errno(int errnum)
{
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
        return SG_ERR_NO_SPACE;
    case ENOENT:
        return SG_ERR_NOT_FOUND;
    case EFBIG:
        return SG_ERR_TOO_LARGE;
    case ENOMEM:
        return SG_ERR_NOMEM;
    case ENAMETOOLONG:
        return SG_ERR_INVALID_NAME;
    default:
        return SG_ERR_SYS;
    }
}

/* Creates path and its missing parents like mkdir -p (mode 0755 before the umask). */
static int mkdir_parents(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Removes the temporary uploads a crash left in the root; returns how many. */
static unsigned sweep_temps(struct file_store *st)
{
    unsigned removed = 0;
    int dfd = openat(st->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        sg_warn("cannot list the root to remove leftover uploads: %s", strerror(errno));
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, FILE_TEMP_PREFIX, strlen(FILE_TEMP_PREFIX)) != 0)
            continue;
        if (unlinkat(st->root_fd, e->d_name, 0) == 0)
            removed++;
        else
            sg_warn("cannot remove leftover upload %s: %s", e->d_name, strerror(errno));
    }
    closedir(d);
    return removed;
}

int file_store_open(struct file_store *st, const char *root, char *err, size_t errlen)
{
    struct file_temp probe = {.fd = -1};
    unsigned removed;
    int rc;

    memset(st, 0, sizeof *st);
    st->root_fd = st->meta_fd = -1;
    if (pthread_mutex_init(&st->meta_lock, NULL) != 0 || pthread_mutex_init(&st->commit_lock, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        return SG_ERR_SYS;
    }
    st->has_lock = 1;
    if (mkdir_parents(root) != 0) {
        snprintf(err, errlen, "cannot create root %s: %s", root, strerror(errno));
        return SG_ERR_SYS;
    }
    st->root_fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (st->root_fd < 0) {
        snprintf(err, errlen, "cannot open root %s: %s", root, strerror(errno));
        return SG_ERR_SYS;
    }
    /* Two servers on one root would delete each other's uploads in progress at start-up. */
    if (flock(st->root_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "root %s is in use by another sockgate-file (flock: %s)", root, strerror(errno));
        return SG_ERR_BUSY;
    }
    if (mkdirat(st->root_fd, FILE_META_DIR, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s/%s: %s", root, FILE_META_DIR, strerror(errno));
        return SG_ERR_SYS;
    }
    /* O_NOFOLLOW: a .meta symlink planted in the root must not send cache writes elsewhere. */
    st->meta_fd = openat(st->root_fd, FILE_META_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (st->meta_fd < 0) {
        snprintf(err, errlen, "cannot open %s/%s (it must be a directory, not a symlink): %s", root,
                 FILE_META_DIR, strerror(errno));
        return SG_ERR_SYS;
    }
    removed = sweep_temps(st);
    if (removed)
        sg_info("removed %u leftover temporary upload%s from %s", removed, removed == 1 ? "" : "s", root);
    file_store_meta_sweep(st);
    /* Fail now, with the reason, rather than on the first upload. */
    rc = file_store_temp_create(st, &probe);
    if (rc != SG_OK) {
        snprintf(err, errlen, "cannot write in root %s: %s", root, strerror(errno));
        return rc;
    }
    file_store_temp_discard(st, &probe);
    return SG_OK;
}

void file_store_close(struct file_store *st)
{
    if (st->meta_fd >= 0)
        close(st->meta_fd);
    if (st->root_fd >= 0)
        close(st->root_fd);
    if (st->has_lock) {
        pthread_mutex_destroy(&st->meta_lock);
        pthread_mutex_destroy(&st->commit_lock);
    }
    st->root_fd = st->meta_fd = -1;
    st->has_lock = 0;
}

uint64_t file_store_free_bytes(const struct file_store *st)
{
    struct statvfs vfs;
    if (fstatvfs(st->root_fd, &vfs) != 0)
        return UINT64_MAX;
    return (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
}

int file_store_temp_create(struct file_store *st, struct file_temp *t)
{
    t->fd = -1;
    for (int i = 0; i < TEMP_ATTEMPTS; i++) {
        uint8_t rnd[8];
        char hex[2 * sizeof rnd + 1];
        if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
            return SG_ERR_SYS;
        sg_hex_encode(rnd, sizeof rnd, hex);
        snprintf(t->name, sizeof t->name, "%s%s", FILE_TEMP_PREFIX, hex);
        t->fd = openat(st->root_fd, t->name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (t->fd >= 0)
            return SG_OK;
        if (errno != EEXIST)
            return file_store_errno(errno);
    }
    return SG_ERR_SYS;
}

void file_store_temp_discard(struct file_store *st, struct file_temp *t)
{
    if (t->fd < 0)
        return;
    close(t->fd);
    t->fd = -1;
    if (unlinkat(st->root_fd, t->name, 0) != 0 && errno != ENOENT)
        sg_warn("cannot remove temporary upload %s: %s", t->name, strerror(errno));
}

int file_store_check(struct file_store *st, const char *name, const struct file_condition *cond, int *existed,
                     char *err, size_t errlen)
{
    struct stat sb;
    char hex[SG_SHA256_HEX];
    int rc = file_store_stat(st, name, &sb), exists = rc == SG_OK;
    if (existed)
        *existed = exists;
    if (rc != SG_OK && rc != SG_ERR_NOT_FOUND) {
        snprintf(err, errlen, "cannot look at %s: %s", name, strerror(errno));
        return rc;
    }
    if (!cond)
        return SG_OK;
    if (cond->must_not_exist && exists) {
        snprintf(err, errlen, "%s exists already, and the request asked to create it only", name);
        return SG_ERR_PRECONDITION;
    }
    if ((cond->must_exist || cond->sha256) && !exists) {
        snprintf(err, errlen, "%s does not exist, and the request asked to replace a version of it", name);
        return SG_ERR_PRECONDITION;
    }
    if (cond->sha256) {
        rc = file_store_sha256(st, name, -1, &sb, hex);
        if (rc != SG_OK) {
            snprintf(err, errlen, "cannot hash %s to compare versions", name);
            return rc == SG_ERR_NOT_FOUND ? SG_ERR_PRECONDITION : rc;
        }
        if (strcmp(hex, cond->sha256) != 0) {
            snprintf(err, errlen, "%s is at version %.12s..., not %.12s... as the request asked", name, hex,
                     cond->sha256);
            return SG_ERR_PRECONDITION;
        }
    }
    return SG_OK;
}

int file_store_temp_commit(struct file_store *st, struct file_temp *t, const char *name,
                           const struct file_condition *cond, int *existed, struct stat *sb, char *err,
                           size_t errlen)
{
    int rc;
    /* The data must be on disk before the rename can make it visible under its name. */
    if (fsync(t->fd) != 0) {
        rc = file_store_errno(errno);
        snprintf(err, errlen, "fsync: %s", strerror(errno));
        goto fail;
    }
    pthread_mutex_lock(&st->commit_lock);
    rc = file_store_check(st, name, cond, existed, err, errlen);
    if (rc == SG_OK && renameat(st->root_fd, t->name, st->root_fd, name) != 0) {
        rc = errno == EISDIR || errno == ENOTEMPTY || errno == EEXIST ? SG_ERR_INVALID_NAME
                                                                       : file_store_errno(errno);
        snprintf(err, errlen, "%s", rc == SG_ERR_INVALID_NAME ? "a directory of that name is in the way"
                                                              : strerror(errno));
    }
    pthread_mutex_unlock(&st->commit_lock);
    if (rc != SG_OK)
        goto fail;
    if (fstat(t->fd, sb) != 0)
        memset(sb, 0, sizeof *sb);
    close(t->fd);
    t->fd = -1;
    /* The rename itself is durable once the directory is. */
    if (fsync(st->root_fd) != 0)
        sg_warn("fsync of the root directory: %s", strerror(errno));
    return SG_OK;
fail:
    file_store_temp_discard(st, t);
    return rc;
}

int file_store_stat(struct file_store *st, const char *name, struct stat *sb)
{
    if (fstatat(st->root_fd, name, sb, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT || errno == ENOTDIR ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    return S_ISREG(sb->st_mode) ? SG_OK : SG_ERR_NOT_FOUND;
}

int file_store_open_read(struct file_store *st, const char *name, int *out, struct stat *sb)
{
    int fd, rc;
    *out = -1;
    /* Checked first so a planted device is never opened (opening some has side effects). */
    rc = file_store_stat(st, name, sb);
    if (rc != SG_OK)
        return rc;
    /* O_NONBLOCK: should a FIFO be swapped in meanwhile, open must not wait for a writer. */
    fd = openat(st->root_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ELOOP ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    if (fstat(fd, sb) != 0 || !S_ISREG(sb->st_mode)) {
        close(fd);
        return SG_ERR_NOT_FOUND;
    }
    *out = fd;
    return SG_OK;
}

int file_store_remove(struct file_store *st, const char *name, const struct file_condition *cond, char *err,
                      size_t errlen)
{
    int rc, existed = 0;
    pthread_mutex_lock(&st->commit_lock);
    rc = file_store_check(st, name, cond, &existed, err, errlen);
    if (rc == SG_OK && !existed)
        rc = SG_ERR_NOT_FOUND;
    if (rc == SG_OK && unlinkat(st->root_fd, name, 0) != 0)
        rc = errno == ENOENT ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    pthread_mutex_unlock(&st->commit_lock);
    if (rc != SG_OK)
        return rc;
    file_store_meta_drop(st, name);
    if (fsync(st->root_fd) != 0)
        sg_warn("fsync of the root directory: %s", strerror(errno));
    return SG_OK;
}
