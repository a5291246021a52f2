/*
 * body.h - private to backends/file: receiving one request's body into a
 * file while it is hashed, for upload (a temporary file) and for an upload
 * session's append (its data file, at its offset).
 */
#ifndef SOCKGATE_FILE_BODY_H
#define SOCKGATE_FILE_BODY_H

#include <stdint.h>

#include "conn.h"
#include "hasher.h"
#include "sockgate/hash.h"
#include "sockgate/iobuf.h"

/*
 * One body being received. The caller sets c, fd, size (whole_size) and hash[] and calls
 * file_body_start; file_body_receive writes every body byte to fd (at its
 * current position) and feeds it into each non-NULL hash[i], in order;
 * file_body_end must follow whatever happened. got counts the bytes written.
 */
struct file_body {
    struct file_conn *c;
    int fd;                  /* borrowed: where the bytes go */
    uint64_t size;           /* the frame's body size */
    uint64_t whole_size;     /* the transfer this body is a piece of (an upload session's length), 0: size */
    uint64_t got;            /* bytes received and written so far */
    struct sg_hash *hash[2]; /* borrowed; either may be NULL */
    int write_errno;         /* the errno of a failed write (file_body_receive returned FILE_BODY_WRITE_FAILED) */
    /* private */
    struct sg_iobuf bufs;    /* 2 * BODY_BUF bytes for direct reads; data NULL: the frame reader only */
    unsigned cur;            /* the buffer the next direct read fills: 0 or 1 */
    int is_direct;           /* the last chunk is in bufs (else in the frame reader's buffer) */
    int lowat;               /* the SO_RCVLOWAT set on the socket, 0 while it is the default */
    int has_hasher;
    struct hasher hasher;
};

/* file_body_receive's answer when writing to fd failed: errno in write_errno, the rest of the body still unread. */
#define FILE_BODY_WRITE_FAILED (-1)

/* Prepares b's big-read buffers and hashing thread (without them it still works, more slowly). */
void file_body_start(struct file_body *b);

/*
 * Receives the body to its END. Returns SG_OK; FILE_BODY_WRITE_FAILED; or
 * the reader's sg_err value when the connection failed (closed, timed out,
 * stopped: the connection must close). Either way b->got bytes were written
 * and hashed, and every hash holds exactly those bytes once file_body_end
 * returned, except after a failed write (the hashes then hold more).
 */
int file_body_receive(struct file_body *b);

/* Waits for the hashing thread, frees the buffers, and restores the socket's low-water mark; idempotent. */
void file_body_end(struct file_body *b);

/* Writes all len bytes to the file fd; 0 or -1 with errno set. */
int file_write_all(int fd, const uint8_t *p, size_t len);

#endif
