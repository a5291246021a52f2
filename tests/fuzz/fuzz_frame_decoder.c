/* fuzz_frame_decoder.c - the frame decoder, sniffer and header parser on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sockgate/frame.h"

/*
 * The first byte picks how the rest is cut into pieces, so the fuzzer
 * explores split points as well as contents. Checks the decoder's own
 * promises: consumed never exceeds the input, body chunks stay inside the
 * piece they came from, and the bytes of a body add up to its announced size.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sg_frame_decoder d;
    size_t step, off = 0;
    uint64_t body_seen = 0;
    int in_body = 0;

    if (size == 0)
        return 0;
    step = (size_t)data[0] % 17 + 1;
    data++;
    size--;
    sg_frame_sniff(data, size, 0);
    sg_frame_decoder_init(&d, 4096);
    while (off < size) {
        size_t n = size - off < step ? size - off : step;
        uint8_t *piece = malloc(n);
        size_t poff = 0;
        memcpy(piece, data + off, n);
        for (;;) {
            size_t used = 0, clen = 0;
            const uint8_t *chunk = NULL;
            enum sg_frame_event ev = sg_frame_decode(&d, piece + poff, n - poff, &used, &chunk, &clen);
            if (used > n - poff)
                abort();
            poff += used;
            if (ev == SG_FRAME_NEED_MORE || ev == SG_FRAME_ERROR)
                break;
            if (ev == SG_FRAME_HEADER) {
                if (!json_is_object(sg_frame_decoder_header(&d)))
                    abort();
                in_body = 1;
                body_seen = 0;
            } else if (ev == SG_FRAME_BODY) {
                if (!in_body || chunk < piece || chunk + clen > piece + n)
                    abort();
                body_seen += clen;
            } else if (ev == SG_FRAME_END) {
                if (!in_body || body_seen != sg_frame_decoder_body_size(&d))
                    abort();
                in_body = 0;
            }
        }
        free(piece);
        off += n;
    }
    sg_frame_decoder_free(&d);
    return 0;
}
