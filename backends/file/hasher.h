/* hasher.h - private to backends/file: a thread that hashes an upload's blocks while the next one is received. */
#ifndef SOCKGATE_FILE_HASHER_H
#define SOCKGATE_FILE_HASHER_H

#include <pthread.h>
#include <stddef.h>

#include "sockgate/hash.h"

/*
 * One helper thread feeding blocks into one or two sg_hash, in the order they were
 * submitted. At most one block is in flight: hasher_submit waits for the
 * previous one, so the caller may reuse a block's memory once the next
 * submit (or a wait) has returned. Not thread-safe: one caller.
 */
struct hasher {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;   /* signalled when a block arrives, is done, or the thread must end */
    /* borrowed, either may be NULL; only the helper touches them while a block is in flight */
    struct sg_hash *hash[2];
    const void *block;     /* the block in flight, NULL when idle */
    size_t len;
    int is_ending;
};

/*
 * Starts the helper thread for hash and also (either may be NULL; both
 * borrowed); SG_OK or SG_ERR_SYS (then hash the caller's way).
 */
int hasher_start(struct hasher *h, struct sg_hash *hash, struct sg_hash *also);

/* Waits for the block in flight, then hands over block (borrowed until the next submit, wait or stop). */
void hasher_submit(struct hasher *h, const void *block, size_t len);

/* Returns once no block is in flight: the hash then covers every block submitted. */
void hasher_wait(struct hasher *h);

/* Waits for the block in flight and ends the thread; h may be started again afterwards. */
void hasher_stop(struct hasher *h);

#endif
