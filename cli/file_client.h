/*
 * file_client.h - what put, get, ls, rm (cmd_file.c) and put --resume
 * (cmd_put_resume.c) share: one framed exchange with a file server.
 */
#ifndef SOCKGATE_CLI_FILE_CLIENT_H
#define SOCKGATE_CLI_FILE_CLIENT_H

#include <jansson.h>
#include <stdint.h>
#include <sys/stat.h>

#include "hash_pipe.h"
#include "progress.h"
#include "sockgate/frame.h"
#include "sockgate/hash.h"

/* One exchange with a file server. */
struct session {
    const char *cmd;
    const char *addr;
    int fd;
    int timeout_ms;
    struct sg_frame_reader *rd;
    int lowat; /* the socket's SO_RCVLOWAT as last set, 0 before get sets one */
};

/* After the last body byte the server fsyncs: allow the timeout plus 1 s per 20 MiB stored. */
#define FSYNC_BYTES_PER_MS (20u * 1024u)

/* Connects s->fd to s->addr and prepares its frame reader; 0, or -1 after printing why. */
int session_open(struct session *s);

/* Closes s's connection (safe when it is not open). */
void session_close(struct session *s);

/* Prints why an exchange failed, from an sg_err value of the reader or a write. */
void report_io(const struct session *s, int rc, const char *during);

/*
 * Waits for the response header until deadline. Returns it (borrowed from
 * the reader, valid until the next frame) or NULL after printing why; an
 * error response is printed as "CMD: MESSAGE (code)" and NULL returned. A
 * reply without must_have (NULL: no check), a field every answer to the op
 * has, comes from another service, and says so.
 */
json_t *read_response(struct session *s, int64_t deadline_ms, const char *must_have);

/* Sends a request header (stolen) without a body; 0, or -1 after printing why. */
int send_request(struct session *s, json_t *req);

/*
 * Streams size bytes of fd (from its current position) to the server while
 * the hashing thread digests the same buffers into sha, moving bar (started
 * by the caller; ended here); fed (may be NULL: a
 * new one is started) is a hash pipe that already holds what came before.
 * The pipe is finished or aborted either way. Returns SG_OK, 1 (the server
 * answered early), SG_ERR_INVALID (the file shrank) or another sg_err value.
 */
int put_body(struct session *s, int fd, uint64_t size, struct cli_progress *bar, struct hash_pipe *fed,
             char sha[SG_SHA256_HEX]);

/*
 * put --resume: uploads fd (stat sb, read from path) as name through an
 * upload session, continuing the one a previous interrupted run left (its id
 * is kept in state_dir, NULL for the default). Returns the exit status.
 */
int put_resume(struct session *s, int fd, const struct stat *sb, const char *path, const char *name, int quiet,
               const char *state_dir);

#endif
