/* fclient.h - a small client of the file service for the integration tests, plus file and process helpers. */
#ifndef SOCKGATE_TEST_FCLIENT_H
#define SOCKGATE_TEST_FCLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "sockgate/frame.h"
#include "sockgate/hash.h"

/* One connection to a file server. */
struct fc_conn {
    int fd;
    struct sg_frame_reader *rd;
};

/* One response: its header, and its body (kept when small enough) with the body's sha256. */
struct fc_resp {
    json_t *h;         /* new reference */
    uint8_t *body;     /* malloc'd when kept, else NULL */
    size_t len;        /* body bytes received */
    char sha256[SG_SHA256_HEX];
};

/* Connects to 127.0.0.1:port; exits the test on failure. */
struct fc_conn *fc_open(uint16_t port);

/* Closes c (NULL is fine). */
void fc_close(struct fc_conn *c);

/* Sends header (stolen) and len bytes of body; returns SG_OK or the send error. */
int fc_send(struct fc_conn *c, json_t *header, const void *body, size_t len);

/* Reads one response; bodies up to keep_max bytes are kept. Returns SG_OK or the read error. */
int fc_recv(struct fc_conn *c, struct fc_resp *r, size_t keep_max);

/* fc_send then fc_recv (bodies up to 64 MiB kept); exits the test when either fails. */
void fc_request(struct fc_conn *c, json_t *header, const void *body, size_t len, struct fc_resp *r);

/* Frees what r holds. */
void fc_resp_free(struct fc_resp *r);

/* Returns the error code of r ("not_found", ...), or NULL when r is a success. */
const char *fc_error(const struct fc_resp *r);

/* Uploads buf as name (extra: more header fields, stolen, may be NULL). */
void fc_upload(struct fc_conn *c, const char *name, const void *buf, size_t len, json_t *extra, struct fc_resp *r);

/* Downloads name (length < 0: to the end); the body is hashed, and kept up to 64 MiB. */
void fc_download(struct fc_conn *c, const char *name, int64_t offset, int64_t length, struct fc_resp *r);

/* Returns header key as an integer, or -1 when absent. */
int64_t fc_int(const struct fc_resp *r, const char *key);

/* Returns header key as a string, or "" when absent. */
const char *fc_str(const struct fc_resp *r, const char *key);

/* Writes the sha256 of buf into hex. */
void fc_sha256(const void *buf, size_t len, char hex[SG_SHA256_HEX]);

/* Fills buf with bytes from a deterministic generator seeded by seed. */
void fc_fill(uint8_t *buf, size_t len, uint64_t seed);

/* Writes buf to path (created or truncated); exits the test on failure. */
void fc_write_file(const char *path, const void *buf, size_t len);

/* Reads the whole of path into a new buffer (*len set); NULL when it cannot be read. */
uint8_t *fc_read_file(const char *path, size_t *len);

/* Returns 1 when path exists (without following a final symlink). */
int fc_exists(const char *path);

/* Returns the number of entries of dir whose name starts with prefix. */
int fc_count_prefix(const char *dir, const char *prefix);

/*
 * Starts sockgate-file on 127.0.0.1:0 serving root, with extra flags
 * (NULL-terminated, may be NULL); exits the test on failure.
 */
void fc_server_start(struct sg_proc *p, const char *root, const char *const *extra);

/* Stops the server and checks it exited with status 0. */
void fc_server_stop(struct sg_proc *p);

/*
 * Runs argv[0] (a built sockgate program from $SOCKGATE_BIN_DIR, a path,
 * or else a command found in PATH) with argv, stdout and stderr captured into
 * the files out_path and err_path (either may be NULL for /dev/null), and
 * returns its exit status (128+signal when killed).
 */
int fc_run(const char *const argv[], const char *out_path, const char *err_path);

/*
 * Describes every entry under dir (not following symlinks; skipping the
 * subtree skip, may be NULL) as sorted lines of path, type, size, inode,
 * mtime and, for regular files, sha256. Returns a new string.
 */
char *fc_tree_snapshot(const char *dir, const char *skip);

#endif
