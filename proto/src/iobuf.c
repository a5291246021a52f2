/* iobuf.c - bulk transfer buffers on 2 MiB pages (see iobuf.h for why and when). */
#include "sockgate/iobuf.h"

#include <stdlib.h>
#include <sys/mman.h>

#include "sockgate/error.h"

/* Maps len bytes (a multiple of SG_IOBUF_PAGE) aligned to SG_IOBUF_PAGE and advised for 2 MiB pages; NULL on failure. */
static uint8_t *map_aligned(size_t len)
{
    uint8_t *map, *buf;
    size_t head;
    /* mmap only promises 4 KiB alignment: map one page more and trim both ends to a 2 MiB boundary. */
    map = mmap(NULL, len + SG_IOBUF_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    buf = (uint8_t *)(((uintptr_t)map + SG_IOBUF_PAGE - 1) & ~(uintptr_t)(SG_IOBUF_PAGE - 1));
    head = (size_t)(buf - map);
    if (head > 0)
        munmap(map, head);
    if (SG_IOBUF_PAGE - head > 0)
        munmap(buf + len, SG_IOBUF_PAGE - head);
    /* Advice only: with transparent huge pages off, the buffer simply stays on 4 KiB pages. */
    (void)madvise(buf, len, MADV_HUGEPAGE);
    return buf;
}

int sg_iobuf_alloc(struct sg_iobuf *b, size_t size, uint64_t transfer_size)
{
    b->data = NULL;
    b->size = size;
    b->mapped = 0;
    if (size == 0 || size > SIZE_MAX - 2 * SG_IOBUF_PAGE)
        return SG_ERR_NOMEM;
    if (transfer_size >= SG_IOBUF_BULK_MIN) {
        size_t len = (size + SG_IOBUF_PAGE - 1) & ~(SG_IOBUF_PAGE - 1);
        b->data = map_aligned(len);
        if (b->data) {
            b->mapped = len;
            return SG_OK;
        }
    }
    b->data = malloc(size);
    return b->data ? SG_OK : SG_ERR_NOMEM;
}

void sg_iobuf_free(struct sg_iobuf *b)
{
    if (b->mapped)
        munmap(b->data, b->mapped);
    else
        free(b->data);
    b->data = NULL;
    b->size = b->mapped = 0;
}
