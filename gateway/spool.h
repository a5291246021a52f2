/* spool.h - bodies whose size is unknown up front: a nameless temporary file, then forwarded to the file backend. */
#ifndef SOCKGATE_GATEWAY_SPOOL_H
#define SOCKGATE_GATEWAY_SPOOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct request;

/* A temporary file that no name points to, so nothing is left behind whatever happens to the process. */
struct spool {
    int fd;
    uint64_t size; /* bytes written so far */
    uint64_t max;  /* writing past this fails with SG_ERR_TOO_LARGE */
};

/* Returns SG_OK when dir can hold spool files (one is made and dropped), else why in err. */
int spool_check(const char *dir, char *err, size_t errlen);

/* Makes s an empty spool in dir holding at most max bytes; s->fd is -1 on failure. */
int spool_open(struct spool *s, const char *dir, uint64_t max, char *err, size_t errlen);

/* Appends len bytes; SG_ERR_TOO_LARGE past s->max, SG_ERR_NO_SPACE when the disk is full. */
int spool_write(struct spool *s, const void *buf, size_t len, char *err, size_t errlen);

/* Closes s (safe on a spool that never opened). */
void spool_close(struct spool *s);

/*
 * Uploads len bytes of s starting at off to the file backend as name, with
 * the request's id and the frame fields of conditions (NULL: none; see
 * files_conditions). On success *result is a new {"name", "size", "sha256",
 * "created"}.
 * On failure records the error in rq (request_fail) and returns it.
 */
int spool_upload(struct request *rq, const struct spool *s, uint64_t off, uint64_t len, const char *name,
                 const json_t *conditions, json_t **result);

/* Picks {"name", "size", "sha256"} out of the file backend's upload answer; a new reference or NULL. */
json_t *upload_result(const json_t *resp);

#endif
