/* workdir.c - the exec service's private working directory: made locked, removed at the end, swept when orphaned. */
#include "workdir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sockgate/error.h"
#include "sockgate/log.h"

/*
 * A directory made this recently is never swept: another server may sit
 * between its mkdtemp and its flock, holding no lock yet for a moment.
 */
#define SWEEP_MIN_AGE_S 5

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    remove(path); /* best effort: whatever stays is reported by the caller's check */
    return 0;
}

int exec_workdir_remove(const char *path)
{
    nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return access(path, F_OK) == 0 ? -1 : 0;
}

/* Returns 1 when tmp/name is a workdir of ours that no living server holds, old enough to judge. */
static int is_orphan(int dir_fd, const char *name)
{
    struct stat st;
    int fd, orphan = 0;

    if (strncmp(name, EXEC_WORKDIR_PREFIX, strlen(EXEC_WORKDIR_PREFIX)) != 0)
        return 0;
    fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    /* Only our own directories: /tmp is shared, and another user's are not ours to judge. */
    if (fstat(fd, &st) == 0 && st.st_uid == geteuid() && time(NULL) - st.st_mtime >= SWEEP_MIN_AGE_S &&
        flock(fd, LOCK_EX | LOCK_NB) == 0)
        orphan = 1; /* a living server holds its lock (and the kernel drops it when it dies, even by SIGKILL) */
    close(fd);
    return orphan;
}

int exec_workdir_sweep(const char *tmp)
{
    char path[4096];
    struct dirent *e;
    DIR *d = opendir(tmp);
    int removed = 0;

    if (!d)
        return 0;
    while ((e = readdir(d)) != NULL) {
        if (!is_orphan(dirfd(d), e->d_name))
            continue;
        snprintf(path, sizeof path, "%s/%s", tmp, e->d_name);
        if (exec_workdir_remove(path) == 0) {
            sg_info("removed %s, the workdir of an exec service that was killed", path);
            removed++;
        } else {
            sg_warn("could not remove %s, the workdir of an exec service that was killed", path);
        }
    }
    closedir(d);
    return removed;
}

int exec_workdir_make(const char *tmp, char *path, size_t cap, int *lock_fd, char *err, size_t errlen)
{
    *lock_fd = -1;
    if ((size_t)snprintf(path, cap, "%s/" EXEC_WORKDIR_PREFIX "XXXXXX", tmp) >= cap) {
        snprintf(err, errlen, "the temporary directory's path is too long: %s", tmp);
        return SG_ERR_INVALID;
    }
    if (!mkdtemp(path)) {
        snprintf(err, errlen, "cannot make a private workdir in %s: %s", tmp, strerror(errno));
        return SG_ERR_SYS;
    }
    /* The lock tells a later sweep that this directory is alive; it lasts as long as the descriptor. */
    *lock_fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errlen, "cannot lock the workdir %s: %s", path, strerror(errno));
        if (*lock_fd >= 0)
            close(*lock_fd);
        *lock_fd = -1;
        rmdir(path);
        return SG_ERR_SYS;
    }
    return SG_OK;
}
