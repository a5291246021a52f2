/*
 * cmd_put_resume.c - `sockgate-cli put --resume`: an upload through an upload
 * session (docs/protocol.md, "Upload sessions"). The server keeps every byte
 * that arrived; the session's id is remembered in a small state file, so the
 * same command run again after a break asks the server where it stopped and
 * sends only the rest. The bytes already there are hashed from the local
 * file, so the final check is still "the server's sha256 is the one of the
 * whole file as read".
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "file_client.h"
#include "progress.h"
#include "sockgate/error.h"
#include "sockgate/net.h"
#include "sockgate/text.h"

/* What a state file remembers: the session, and the file as it was when the session began. */
struct resume_state {
    char session[64];
    uint64_t size;
    int64_t mtime_s;
    int64_t mtime_ns;
    uint64_t ino;
};

/* Creates path and its missing parents with mode 0700 (state is the user's own); 0 or -1. */
static int mkdir_private(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    return mkdir(buf, 0700) != 0 && errno != EEXIST ? -1 : 0;
}

/*
 * Writes the state file's path for (addr, name, the file's absolute path)
 * into out, creating the directory: DIR/put-<32 hex>.json. 0, or -1 after
 * printing why.
 */
static int state_path(const char *given_dir, const char *addr, const char *name, const char *path, char *out,
                      size_t outlen)
{
    char dir[PATH_MAX], abs[PATH_MAX], sha[SG_SHA256_HEX];
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");
    struct sg_hash h;
    if (given_dir && *given_dir)
        snprintf(dir, sizeof dir, "%s", given_dir);
    else if (xdg && *xdg)
        snprintf(dir, sizeof dir, "%s/sockgate-cli", xdg);
    else if (home && *home)
        snprintf(dir, sizeof dir, "%s/.local/state/sockgate-cli", home);
    else {
        cli_error("put: --resume needs a place to remember the upload: set --state-dir, XDG_STATE_HOME or HOME");
        return -1;
    }
    if (mkdir_private(dir) != 0) {
        cli_error("put: cannot create the state directory %s: %s", dir, strerror(errno));
        return -1;
    }
    if (!realpath(path, abs))
        snprintf(abs, sizeof abs, "%s", path);
    if (sg_hash_init(&h, 0) != SG_OK) {
        cli_error("out of memory");
        return -1;
    }
    /* NUL separators: no choice of names can make two different triples hash alike. */
    sg_hash_update(&h, addr, strlen(addr) + 1);
    sg_hash_update(&h, name, strlen(name) + 1);
    sg_hash_update(&h, abs, strlen(abs) + 1);
    sg_hash_final(&h, sha, NULL);
    if (snprintf(out, outlen, "%s/put-%.32s.json", dir, sha) >= (int)outlen) {
        cli_error("put: the state directory's path is too long");
        return -1;
    }
    return 0;
}

/* Reads a state file; 0 when it holds a usable state, -1 otherwise (missing or damaged: start anew). */
static int state_load(const char *file, struct resume_state *st)
{
    json_error_t jerr;
    json_t *j = json_load_file(file, JSON_REJECT_DUPLICATES, &jerr);
    const char *id = json_string_value(json_object_get(j, "session"));
    int rc = -1;
    memset(st, 0, sizeof *st);
    if (id && strlen(id) < sizeof st->session && json_is_integer(json_object_get(j, "size"))) {
        snprintf(st->session, sizeof st->session, "%s", id);
        st->size = (uint64_t)json_integer_value(json_object_get(j, "size"));
        st->mtime_s = (int64_t)json_integer_value(json_object_get(j, "mtime_s"));
        st->mtime_ns = (int64_t)json_integer_value(json_object_get(j, "mtime_ns"));
        st->ino = (uint64_t)json_integer_value(json_object_get(j, "ino"));
        rc = 0;
    }
    json_decref(j);
    return rc;
}

/* Writes a state file atomically (temporary file, rename); 0, or -1 after printing why. */
static int state_save(const char *file, const struct resume_state *st)
{
    char tmp[PATH_MAX + 128];
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I}", "session", st->session, "size", (json_int_t)st->size,
                          "mtime_s", (json_int_t)st->mtime_s, "mtime_ns", (json_int_t)st->mtime_ns, "ino",
                          (json_int_t)st->ino);
    int rc = -1;
    if (snprintf(tmp, sizeof tmp, "%s.tmp", file) < (int)sizeof tmp && j &&
        json_dump_file(j, tmp, JSON_COMPACT) == 0 && rename(tmp, file) == 0)
        rc = 0;
    else
        cli_error("put: cannot write %s: %s (the upload goes on, but cannot be resumed)", file, strerror(errno));
    if (rc != 0)
        unlink(tmp);
    json_decref(j);
    return rc;
}

/*
 * Sends req (stolen) and reads the answer. Returns SG_OK with *resp (borrowed
 * until the next frame); the error code of an error answer, its message in
 * msg; or -1 after printing why the exchange itself failed.
 */
static int ask(struct session *s, json_t *req, json_t **resp, char *msg, size_t msglen)
{
    enum sg_frame_event ev;
    const uint8_t *chunk;
    size_t len;
    int rc;
    *resp = NULL;
    if (send_request(s, req) != 0)
        return -1;
    /* The answers of the session ops carry no body: read to the frame's end, so the next answer starts clean. */
    do {
        rc = sg_frame_reader_next(s->rd, &ev, &chunk, &len, sg_now_ms() + s->timeout_ms);
        if (rc != SG_OK) {
            report_io(s, rc, "before answering");
            return -1;
        }
        if (ev == SG_FRAME_HEADER && sg_frame_decoder_body_size(&s->rd->dec) > 0) {
            cli_error("put: %s: the server's answer has a body; is this a sockgate file server?", s->addr);
            return -1;
        }
    } while (ev != SG_FRAME_END);
    *resp = sg_frame_decoder_header(&s->rd->dec);
    return sg_frame_header_error(*resp, msg, msglen);
}

/* Asks where session id stands; its offset, or -1 when it is unknown or not the one for (name, size). */
static int64_t ask_offset(struct session *s, const char *id, const char *name, uint64_t size)
{
    json_t *resp;
    char msg[512];
    int64_t off = -1, length = -1;
    int rc = ask(s, json_pack("{s:s, s:s}", "op", "session_stat", "session", id), &resp, msg, sizeof msg);
    if (rc != SG_OK)
        return -1;
    sg_header_int(resp, "offset", 0, INT64_MAX, &off);
    sg_header_int(resp, "length", 0, INT64_MAX, &length);
    if (!sg_header_str(resp, "filename") || strcmp(sg_header_str(resp, "filename"), name) != 0 ||
        length != (int64_t)size || off > length)
        return -1;
    return off;
}

/* Feeds the first offset bytes of fd (read from its start) into a new hash pipe; NULL after printing why. */
static struct hash_pipe *hash_prefix(int fd, uint64_t offset, uint64_t size, const char *path)
{
    struct hash_pipe *pipe = hash_pipe_start(size);
    uint64_t done = 0;
    if (!pipe) {
        cli_error("put: cannot start the hashing thread: out of memory");
        return NULL;
    }
    while (done < offset) {
        uint8_t *buf = hash_pipe_take(pipe);
        size_t want = offset - done < HASH_PIPE_SLOT_SIZE ? (size_t)(offset - done) : HASH_PIPE_SLOT_SIZE;
        ssize_t n = read(fd, buf, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            cli_error("put: reading %s: %s", path, n == 0 ? "it shrank" : strerror(errno));
            hash_pipe_abort(pipe);
            return NULL;
        }
        hash_pipe_submit(pipe, (size_t)n);
        done += (uint64_t)n;
    }
    return pipe;
}

/* Prints the result line when resp is the finished upload of the bytes hashed to sha; 0, or -1 after printing why. */
static int check_finished(const json_t *resp, const char *sha, const char *path, const char *name)
{
    const char *theirs = sg_header_str(resp, "sha256");
    if (!json_is_true(json_object_get(resp, "finished"))) {
        cli_error("put: the server did not finish the upload although every byte was sent");
        return -1;
    }
    if (!theirs || strcmp(theirs, sha) != 0) {
        cli_error("put: the server stored sha256 %s but %s hashed to %s while sent (did it change meanwhile?)",
                  theirs ? theirs : "(none)", path, sha);
        return -1;
    }
    printf("%s  %s\n", sha, sg_header_str(resp, "name") ? sg_header_str(resp, "name") : name);
    return fflush(stdout) == 0 ? 0 : -1;
}

int put_resume(struct session *s, int fd, const struct stat *sb, const char *path, const char *name, int quiet,
               const char *state_dir)
{
    struct cli_progress bar;
    struct resume_state st, old;
    struct hash_pipe *pipe = NULL;
    char file[PATH_MAX + 64], msg[512], sha[SG_SHA256_HEX];
    uint64_t size = (uint64_t)sb->st_size;
    int64_t offset = -1;
    int status = CLI_EXIT_FAIL, has_session = 0, rc;
    json_t *resp, *req;

    if (state_path(state_dir, s->addr, name, path, file, sizeof file) != 0 || session_open(s) != 0)
        return CLI_EXIT_FAIL;
    memset(&st, 0, sizeof st);
    st.size = size;
    st.mtime_s = (int64_t)sb->st_mtim.tv_sec;
    st.mtime_ns = (int64_t)sb->st_mtim.tv_nsec;
    st.ino = (uint64_t)sb->st_ino;
    if (state_load(file, &old) == 0) {
        if (old.size == st.size && old.mtime_s == st.mtime_s && old.mtime_ns == st.mtime_ns && old.ino == st.ino)
            offset = ask_offset(s, old.session, name, size);
        if (offset >= 0) {
            snprintf(st.session, sizeof st.session, "%s", old.session);
        } else {
            /* The file changed, or the server forgot the session (finished, expired): start again. */
            if (ask(s, json_pack("{s:s, s:s}", "op", "session_abort", "session", old.session), &resp, msg,
                    sizeof msg) < 0)
                goto out;
        }
    }
    if (offset < 0) {
        rc = ask(s, json_pack("{s:s, s:s, s:I}", "op", "session_create", "filename", name, "length", (json_int_t)size),
                 &resp, msg, sizeof msg);
        if (rc != SG_OK) {
            if (rc > 0)
                cli_error("put: %s (%s)", msg, sg_err_code(rc));
            goto out;
        }
        snprintf(st.session, sizeof st.session, "%s",
                 sg_header_str(resp, "session") ? sg_header_str(resp, "session") : "");
        if (!st.session[0]) {
            cli_error("put: the server's answer names no upload session");
            goto out;
        }
        if (json_is_true(json_object_get(resp, "finished"))) {
            /* An empty file is finished at creation. */
            status = check_finished(resp, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", path,
                                    name) == 0 ? 0 : CLI_EXIT_FAIL;
            goto out;
        }
        offset = 0;
        state_save(file, &st);
    } else if (offset > 0) {
        char done[32], total[32];
        cli_format_bytes((double)offset, done, sizeof done);
        cli_format_bytes((double)size, total, sizeof total);
        fprintf(stderr, "sockgate-cli: put: resuming %s at byte %" PRId64 " of %" PRIu64 " (%s of %s already there)\n",
                name, offset, size, done, total);
    }
    has_session = 1;
    pipe = hash_prefix(fd, (uint64_t)offset, size, path);
    if (!pipe)
        goto out;
    if ((uint64_t)offset == size) {
        /* Every byte is there, but the finish did not happen (it failed, or the answer was lost). */
        hash_pipe_finish(pipe, sha);
        pipe = NULL;
        rc = ask(s, json_pack("{s:s, s:s}", "op", "session_finish", "session", st.session), &resp, msg, sizeof msg);
        if (rc != SG_OK) {
            if (rc > 0)
                cli_error("put: %s (%s)", msg, sg_err_code(rc));
            goto out;
        }
        status = check_finished(resp, sha, path, name) == 0 ? 0 : CLI_EXIT_FAIL;
        goto out;
    }
    req = json_pack("{s:s, s:s, s:I, s:I}", "op", "session_append", "session", st.session, "offset",
                    (json_int_t)offset, "total_size", (json_int_t)(size - (uint64_t)offset));
    if (send_request(s, req) != 0) {
        hash_pipe_abort(pipe);
        goto out;
    }
    cli_progress_start(&bar, name, size - (uint64_t)offset, quiet);
    rc = put_body(s, fd, size - (uint64_t)offset, &bar, pipe, sha);
    if (rc == SG_ERR_INVALID) {
        cli_error("put: %s shrank while it was read", path);
        goto out;
    }
    if (rc != SG_OK && rc != 1 && rc != SG_ERR_CLOSED) {
        report_io(s, rc, "while sending the file");
        goto out;
    }
    resp = read_response(s, sg_now_ms() + s->timeout_ms + (int64_t)(size / FSYNC_BYTES_PER_MS), "session");
    if (!resp)
        goto out;
    if (rc != SG_OK) {
        cli_error("put: the server answered before the upload was complete");
        goto out;
    }
    status = check_finished(resp, sha, path, name) == 0 ? 0 : CLI_EXIT_FAIL;
    if (status == 0)
        cli_progress_summary(&bar, "put", name, sha);
out:
    if (status == 0)
        unlink(file); /* the upload is done: nothing to resume */
    else if (has_session)
        cli_error("put: the server keeps what arrived; run the same command again to send the rest");
    session_close(s);
    return status;
}
