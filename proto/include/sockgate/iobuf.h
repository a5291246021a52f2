/*
 * iobuf.h - the buffer a large transfer streams through, on 2 MiB pages.
 *
 * Copying socket bytes into, or out of, a buffer of 4 KiB pages costs a
 * page-table walk per page, and in a virtual machine every walk also goes
 * through the host's tables. On this project's 2-core VM, recv() into the
 * cli's 4 MiB hashing ring cost 0.87 s of system time per GiB on 4 KiB
 * pages and 0.22 s on 2 MiB pages (docs/internals/proto.md, "Bulk buffers").
 * A 2 MiB page is also 2 MiB of memory however little of it is used, so only
 * transfers of at least SG_IOBUF_BULK_MIN bytes get one; smaller ones get
 * plain malloc'd memory and cost what they did before.
 */
#ifndef SOCKGATE_IOBUF_H
#define SOCKGATE_IOBUF_H

#include <stddef.h>
#include <stdint.h>

/* The page size bulk buffers are aligned and rounded to. */
#define SG_IOBUF_PAGE ((size_t)2 << 20)
/* The smallest transfer worth a buffer of 2 MiB pages (8 of them go by while it streams). */
#define SG_IOBUF_BULK_MIN ((uint64_t)16 << 20)

struct sg_iobuf {
    uint8_t *data;  /* size usable bytes, NULL when not allocated */
    size_t size;
    size_t mapped;  /* bytes mapped on 2 MiB pages, 0 when data came from malloc */
};

/*
 * Allocates size bytes into b for a transfer of transfer_size bytes: on 2 MiB
 * pages (zeroed, aligned) when the transfer is at least SG_IOBUF_BULK_MIN,
 * from malloc otherwise or when the mapping fails. Where the kernel offers no
 * 2 MiB pages the mapping still works, on ordinary pages. SG_OK or
 * SG_ERR_NOMEM (b->data NULL).
 */
int sg_iobuf_alloc(struct sg_iobuf *b, size_t size, uint64_t transfer_size);

/* Frees b's memory, however it was allocated, and clears b; safe on a cleared or failed b. */
void sg_iobuf_free(struct sg_iobuf *b);

#endif
