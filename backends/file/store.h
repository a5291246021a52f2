/* store.h - private to backends/file: the root directory, its temporary files and its sha256 cache. */
#ifndef SOCKGATE_FILE_STORE_H
#define SOCKGATE_FILE_STORE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>

#include "sockgate/hash.h"

/* Every temporary upload is named this prefix plus 16 hex digits; no valid name starts with '.'. */
#define FILE_TEMP_PREFIX ".upload-"
#define FILE_TEMP_NAME_LEN 32
/* The hidden directory of the sha256 cache, one small record per stored name. */
#define FILE_META_DIR ".meta"

/*
 * The root directory, opened once. Every file operation is made relative to
 * root_fd with openat/renameat/unlinkat/fstatat and never follows a symlink,
 * so no name can reach outside the root. Thread-safe: the descriptors are
 * only read after file_store_open(), and meta_lock orders cache writes.
 */
struct file_store {
    int root_fd;
    int meta_fd;
    pthread_mutex_t meta_lock;
    /*
     * Held across "check the file's current state, then rename or unlink":
     * every commit and delete takes it, so a conditional one (below) is
     * atomic against all others. The data is synced before, the directory
     * after, so the lock covers no disk wait.
     */
    pthread_mutex_t commit_lock;
    int has_lock;
};

/*
 * A condition on the file a commit or a delete would replace (HTTP's
 * If-None-Match: * and If-Match). All zero: none.
 */
struct file_condition {
    int must_not_exist;  /* create only (If-None-Match: *) */
    int must_exist;      /* replace only (If-Match: *) */
    const char *sha256;  /* only this version (64 lower-case hex digits), or NULL */
};

/* A temporary upload inside the root: fd open for writing, name its entry. */
struct file_temp {
    int fd;
    char name[FILE_TEMP_NAME_LEN];
};

/*
 * Creates root (and its parents) when missing, opens it, takes an exclusive
 * flock so no second server shares it, opens or creates .meta, and removes
 * what a crash left behind (temporary uploads, stale cache records). Returns
 * SG_OK, or an sg_err value with why in err.
 */
int file_store_open(struct file_store *st, const char *root, char *err, size_t errlen);

/* Closes the descriptors of st (safe on a store whose open failed). */
void file_store_close(struct file_store *st);

/* Maps an errno value from a file operation to an sg_err value (ENOSPC to SG_ERR_NO_SPACE, ...). */
int file_store_errno(int errnum);

/* Returns the bytes an unprivileged writer may still use on the root's filesystem, UINT64_MAX when unknown. */
uint64_t file_store_free_bytes(const struct file_store *st);

/* Creates a new empty temporary file in the root; SG_OK or an sg_err value (errno kept). */
int file_store_temp_create(struct file_store *st, struct file_temp *t);

/*
 * Makes t's content the file name, atomically: fsync the data, then, under
 * commit_lock, check cond (NULL: none) against the file now there and rename
 * over it, then fsync the directory. *existed says whether a file of that
 * name was replaced. Fills *sb with the committed file's stat. On failure
 * (SG_ERR_PRECONDITION when cond does not hold) the temporary file is removed
 * and err says why. t is closed either way.
 */
int file_store_temp_commit(struct file_store *st, struct file_temp *t, const char *name,
                           const struct file_condition *cond, int *existed, struct stat *sb, char *err,
                           size_t errlen);

/*
 * Checks cond against the file name as it is now: SG_OK, or
 * SG_ERR_PRECONDITION with why in err. *existed (may be NULL) says whether
 * the file exists. Callers that act on the answer hold commit_lock.
 */
int file_store_check(struct file_store *st, const char *name, const struct file_condition *cond, int *existed,
                     char *err, size_t errlen);

/* Closes and removes a temporary file (best effort; safe when t->fd is -1). */
void file_store_temp_discard(struct file_store *st, struct file_temp *t);

/*
 * Opens the regular file name for reading (never a symlink, FIFO or device)
 * and fills *sb. Returns SG_OK, SG_ERR_NOT_FOUND (missing or not a regular
 * file), or another sg_err value.
 */
int file_store_open_read(struct file_store *st, const char *name, int *fd, struct stat *sb);

/* Fills *sb for the regular file name; SG_OK or SG_ERR_NOT_FOUND (missing or not a regular file). */
int file_store_stat(struct file_store *st, const char *name, struct stat *sb);

/* Deletes the regular file name, when cond (NULL: none) holds, and its cache record, then fsyncs the directory. */
int file_store_remove(struct file_store *st, const char *name, const struct file_condition *cond, char *err,
                      size_t errlen);

/*
 * Writes the sha256 of the regular file name into hex: from the cache when
 * its record matches sb (inode, size, mtime, ctime), else by reading the file
 * (fd when >= 0, else opened here) and caching the result. sb is the file's
 * stat as the caller saw it.
 */
int file_store_sha256(struct file_store *st, const char *name, int fd, const struct stat *sb,
                      char hex[SG_SHA256_HEX]);

/* Records hex as the sha256 of name as it is in sb, unless name now is another file (best effort). */
void file_store_meta_put(struct file_store *st, const char *name, const struct stat *sb, const char *hex);

/* Removes the cache record of name (best effort). */
void file_store_meta_drop(struct file_store *st, const char *name);

/* Removes cache records left by a crash: temporary records and records of names that are gone. */
void file_store_meta_sweep(struct file_store *st);

#endif
