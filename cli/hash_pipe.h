/*
 * hash_pipe.h - sha256 on a second thread, fed by a small ring of large
 * buffers, so a transfer costs max(I/O, hashing) instead of their sum.
 *
 * One producer (the thread doing the I/O) takes a free buffer, fills it,
 * submits it, and may keep reading it (to send or write it) until its next
 * take: the hashing thread only reads buffers, in submission order. Memory is
 * bounded: HASH_PIPE_SLOTS buffers of HASH_PIPE_SLOT_SIZE bytes, whatever the
 * transfer's size. Not for several producers.
 */
#ifndef SOCKGATE_CLI_HASH_PIPE_H
#define SOCKGATE_CLI_HASH_PIPE_H

#include <stddef.h>
#include <stdint.h>

#include "sockgate/hash.h"

#define HASH_PIPE_SLOTS 4u
#define HASH_PIPE_SLOT_SIZE (1024u * 1024u)

struct hash_pipe;

/*
 * Starts the hashing thread and its buffers for a transfer of transfer_size
 * bytes (sockgate/iobuf.h picks their pages by it); returns a new pipe
 * (freed by finish or abort) or NULL on failure.
 */
struct hash_pipe *hash_pipe_start(uint64_t transfer_size);

/*
 * Returns a free buffer of HASH_PIPE_SLOT_SIZE bytes (borrowed, owned by p),
 * waiting while all are still being hashed; the same one again when nothing
 * was submitted since the last take.
 */
uint8_t *hash_pipe_take(struct hash_pipe *p);

/* Hands the first len bytes of the buffer from the last take to the hashing thread. */
void hash_pipe_submit(struct hash_pipe *p, size_t len);

/* Waits for every submitted byte to be hashed, writes the hex sha256, stops the thread and frees p. */
void hash_pipe_finish(struct hash_pipe *p, char sha[SG_SHA256_HEX]);

/* Stops the thread without a digest (submitted buffers are dropped) and frees p; safe on NULL. */
void hash_pipe_abort(struct hash_pipe *p);

#endif
