/* workdir.h - the exec service's private working directory: made locked, removed at the end, swept when orphaned. */
#ifndef SOCKGATE_EXEC_WORKDIR_H
#define SOCKGATE_EXEC_WORKDIR_H

#include <stddef.h>

/* The name every private workdir starts with, inside $TMPDIR (else /tmp). */
#define EXEC_WORKDIR_PREFIX "sockgate-exec-"

/*
 * Removes the private workdirs that exec servers killed without a chance to
 * clean up (SIGKILL, the OOM killer) left in tmp: those whose lock nobody
 * holds. Returns how many were removed.
 */
int exec_workdir_sweep(const char *tmp);

/*
 * Makes tmp/sockgate-exec-XXXXXX (mode 0700) into path and locks it for this
 * process's lifetime; *lock_fd holds the lock. Returns SG_OK or an error with err filled.
 */
int exec_workdir_make(const char *tmp, char *path, size_t cap, int *lock_fd, char *err, size_t errlen);

/* Removes path and everything in it (no symlink is followed); returns 0, or -1 when something stayed. */
int exec_workdir_remove(const char *path);

#endif
