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
 * files_conditions), on the worker's loop, sendfile as the socket takes it.
 * sent(arg) runs on the loop when the backend answered or the upload
 * failed, possibly from inside this call;
 * spool_send_is_done says so either way. Returns SG_OK and *out, or the
 * error recorded in rq. s must stay open until spool_send_free.
 */
struct spool_send;
int spool_send_start(struct request *rq, const struct spool *s, uint64_t off, uint64_t len, const char *name,
                     const json_t *conditions, void (*sent)(void *arg), void *arg, struct spool_send **out);

/* 1 once the backend answered the upload or it failed. */
int spool_send_is_done(const struct spool_send *ss);

/* After spool_send_is_done: SG_OK and *result ({"name", "size", "sha256", "created"}, new), or the error recorded in rq. */
int spool_send_result(struct spool_send *ss, json_t **result);

/* Ends ss: an upload still running is cut (the backend drops its partial file). ss may be NULL. */
void spool_send_free(struct spool_send *ss);

/* Picks {"name", "size", "sha256"} out of the file backend's upload answer; a new reference or NULL. */
json_t *upload_result(const json_t *resp);

#endif
