/* frame.h - the framed wire protocol: u32 LE header length, JSON header, body. */
#ifndef SOCKGATE_FRAME_H
#define SOCKGATE_FRAME_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define SG_FRAME_DEFAULT_MAX_HEADER (64u * 1024u)
#define SG_FRAME_MIN_HEADER 2u             /* "{}" is the shortest header */
#define SG_FRAME_MAX_DEPTH 32 /* JSON nesting limit of a header */
#define SG_FRAME_MAX_BODY (UINT64_C(1) << 53)

enum sg_frame_event {
    SG_FRAME_NEED_MORE, /* all input consumed; feed more bytes */
    SG_FRAME_HEADER,    /* a header is complete: see sg_frame_decoder_header() */
    SG_FRAME_BODY,      /* chunk and chunk_len hold the next piece of the body */
    SG_FRAME_END,       /* the frame (header and whole body) is complete */
    SG_FRAME_ERROR      /* protocol error; the decoder stays in error */
};

/*
 * Incremental decoder. It never holds a body: body bytes are handed back as
 * pointers into the caller's input. Only the header (at most max_header
 * bytes) is buffered. Not thread-safe; one per connection.
 */
struct sg_frame_decoder {
    size_t max_header;
    int state;
    uint8_t len_bytes[4];
    size_t len_have;
    uint32_t header_len;
    char *header_buf;
    size_t header_have;
    json_t *header;
    uint64_t body_size;
    uint64_t body_left;
    int err;
    char errmsg[160];
};

/* Prepares d to decode frames whose header is at most max_header bytes (0: default). */
void sg_frame_decoder_init(struct sg_frame_decoder *d, size_t max_header);

/* Frees what d holds; d may be initialised again afterwards. */
void sg_frame_decoder_free(struct sg_frame_decoder *d);

/*
 * Consumes up to len bytes of buf and reports at most one event.
 * *consumed is always set to the number of bytes used. For SG_FRAME_BODY,
 * *chunk points into buf (borrowed) and *chunk_len is its length. A frame
 * with an empty body reports HEADER then END. After END the decoder is ready
 * for the next frame, so call again with the rest of the buffer: many frames
 * in one buffer and one frame over many buffers both work.
 */
enum sg_frame_event sg_frame_decode(struct sg_frame_decoder *d, const uint8_t *buf, size_t len,
                                    size_t *consumed, const uint8_t **chunk, size_t *chunk_len);

/* Returns the current frame's header (borrowed; valid until the next header or free). */
json_t *sg_frame_decoder_header(const struct sg_frame_decoder *d);

/* Returns the current frame's body size as announced by its header. */
uint64_t sg_frame_decoder_body_size(const struct sg_frame_decoder *d);

/* Returns the human message of the last SG_FRAME_ERROR (never NULL). */
const char *sg_frame_decoder_error(const struct sg_frame_decoder *d);

/*
 * Parses and validates a header already cut out of a stream: a JSON object,
 * valid UTF-8, no duplicate keys, nesting at most SG_FRAME_MAX_DEPTH, nothing
 * after it. On success *out is a new reference and *body_size the body size
 * (total_size, else filesize, else 0). On failure returns SG_ERR_PROTO and
 * writes why into err.
 */
int sg_frame_parse_header(const char *buf, size_t len, json_t **out, uint64_t *body_size,
                          char *err, size_t errlen);

enum sg_sniff { SG_SNIFF_NEED_MORE, SG_SNIFF_FRAMED, SG_SNIFF_RAW };

/*
 * Tells a framed request from a raw one by its first bytes: framed means 4
 * bytes whose LE value is in 2..max_header followed by '{'. NEED_MORE means
 * the bytes so far could still start a frame; a caller that gets no more
 * bytes within a short wait should treat the input as raw.
 */
enum sg_sniff sg_frame_sniff(const uint8_t *buf, size_t len, size_t max_header);

/*
 * Encodes the length prefix and compact JSON of header into a new malloc'd
 * buffer (*out, *out_len); the body is not included. The caller sets
 * total_size in header when a body follows. Returns SG_OK or SG_ERR_NOMEM /
 * SG_ERR_TOO_LARGE (header over max_header, 0 meaning the default).
 */
int sg_frame_encode_header(const json_t *header, size_t max_header, uint8_t **out, size_t *out_len);

/* Returns a new header object {"error": {"code", "message"}} plus "id" when id is not NULL. */
json_t *sg_frame_error_header(int err, const char *message, const char *id);

/*
 * Reads the error of a response header: returns SG_OK when header has no
 * "error", else the error's enum value with its message copied into msg.
 */
int sg_frame_header_error(const json_t *header, char *msg, size_t msglen);

/* Returns the string value of key in header, or NULL when absent or not a string (borrowed). */
const char *sg_header_str(const json_t *header, const char *key);

/*
 * Reads an integer key: returns SG_OK and sets *out; SG_ERR_NOT_FOUND when
 * absent; SG_ERR_INVALID when not an integer within min..max.
 */
int sg_header_int(const json_t *header, const char *key, int64_t min, int64_t max, int64_t *out);

/* ---- blocking helpers for clients and thread-per-request code ---- */

/*
 * A buffered reader of frames from one file descriptor (blocking use with
 * deadlines; the fd may be non-blocking). Bytes past the current frame stay
 * buffered for the next call.
 */
struct sg_frame_reader {
    int fd;
    struct sg_frame_decoder dec;
    uint8_t buf[65536];
    size_t off;
    size_t len;
};

/* Prepares r to read frames from fd (not owned) with the given header limit. */
void sg_frame_reader_init(struct sg_frame_reader *r, int fd, size_t max_header);

/* Frees what r holds (not the fd). */
void sg_frame_reader_free(struct sg_frame_reader *r);

/*
 * Returns the next event (HEADER, BODY or END) in *ev, reading from the fd as
 * needed until deadline_ms (sg_now_ms() clock; -1 means none). Returns SG_OK,
 * SG_ERR_PROTO, SG_ERR_TIMEOUT, SG_ERR_CLOSED (EOF, also mid-frame) or SG_ERR_SYS.
 */
int sg_frame_reader_next(struct sg_frame_reader *r, enum sg_frame_event *ev, const uint8_t **chunk,
                         size_t *chunk_len, int64_t deadline_ms);

/*
 * Sends one whole frame: header then body_len bytes of body (body may be NULL
 * when body_len is 0). Sets nothing in header: the caller sets total_size.
 */
int sg_frame_send(int fd, const json_t *header, const void *body, size_t body_len, int64_t deadline_ms);

#endif
