/*
 * session.c - upload sessions on disk and in memory: their records, the
 * claims that make requests on one session take turns, the running sha256,
 * and the sweep that frees expired and half-made sessions.
 */
#include "session.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "name.h"
#include "sockgate/error.h"
#include "sockgate/log.h"
#include "sockgate/net.h"
#include "sockgate/text.h"

#define DATA_SUFFIX ".data"
#define INFO_SUFFIX ".info"
#define TEMP_SUFFIX ".tmp"
/* How often the sweeper looks for expired sessions: half the expiry, within these bounds. */
#define SWEEP_MIN_S 1
#define SWEEP_MAX_S 60
/* The buffer a finish re-reads a session's bytes through when its running hash was lost. */
#define REHASH_BUF (1024u * 1024u)

int file_session_id_valid(const char *id)
{
    return id && strlen(id) == FILE_SESSION_ID_HEX && strspn(id, "0123456789abcdef") == FILE_SESSION_ID_HEX;
}

int file_session_new_id(char id[FILE_SESSION_ID_HEX + 1])
{
    uint8_t rnd[FILE_SESSION_ID_HEX / 2];
    if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd)
        return SG_ERR_SYS;
    sg_hex_encode(rnd, sizeof rnd, id);
    return SG_OK;
}

void file_session_data_name(const char *id, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%s" DATA_SUFFIX, id);
}

/* Writes the record's or its temporary's name of id into buf. */
static void info_name(const char *id, int is_temp, char *buf, size_t buflen)
{
    snprintf(buf, buflen, "%s%s", id, is_temp ? INFO_SUFFIX TEMP_SUFFIX : INFO_SUFFIX);
}

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

int64_t file_session_expires(const struct file_sessions *ss, const struct stat *sb)
{
    return (int64_t)sb->st_mtim.tv_sec + ss->expiry_s;
}

/* ---- the records ---- */

void file_session_record_free(struct file_session_record *rec)
{
    free(rec->metadata);
    rec->metadata = NULL;
}

/* Fills rec from a record's JSON; SG_OK or SG_ERR_INTERNAL (damaged, or written by someone else). */
static int record_from_json(const json_t *j, struct file_session_record *rec)
{
    const json_t *name = json_object_get(j, "filename"), *len = json_object_get(j, "length");
    const json_t *meta = json_object_get(j, "metadata"), *created = json_object_get(j, "created");
    const char *none = json_string_value(json_object_get(j, "if_none_match"));
    const char *match = json_string_value(json_object_get(j, "if_match"));
    char why[128];
    memset(rec, 0, sizeof *rec);
    if (json_integer_value(json_object_get(j, "v")) != 1 || !json_is_string(name) ||
        json_string_length(name) >= sizeof rec->filename ||
        file_name_check(json_string_value(name), json_string_length(name), why, sizeof why) != SG_OK ||
        (len && (!json_is_integer(len) || json_integer_value(len) < 0)) || !json_is_integer(created) ||
        (meta && (!json_is_string(meta) || json_string_length(meta) > FILE_SESSION_METADATA_MAX)) ||
        (match && strcmp(match, "*") != 0 && strlen(match) != SG_SHA256_HEX - 1))
        return SG_ERR_INTERNAL;
    memcpy(rec->filename, json_string_value(name), json_string_length(name) + 1);
    rec->has_length = len != NULL;
    rec->length = len ? (uint64_t)json_integer_value(len) : 0;
    rec->created = (int64_t)json_integer_value(created);
    rec->must_not_exist = none && strcmp(none, "*") == 0;
    rec->must_exist = match && strcmp(match, "*") == 0;
    if (match && !rec->must_exist)
        memcpy(rec->if_match, match, SG_SHA256_HEX);
    if (meta) {
        rec->metadata = strdup(json_string_value(meta));
        if (!rec->metadata)
            return SG_ERR_NOMEM;
    }
    return SG_OK;
}

int file_session_record_read(struct file_sessions *ss, const char *id, struct file_session_record *rec)
{
    char name[64], *buf = NULL;
    json_error_t jerr;
    json_t *j = NULL;
    size_t have = 0;
    int fd, rc = SG_ERR_INTERNAL;

    memset(rec, 0, sizeof *rec);
    info_name(id, 0, name, sizeof name);
    fd = openat(ss->dir_fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ELOOP ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    buf = malloc(FILE_SESSION_RECORD_MAX);
    if (!buf) {
        rc = SG_ERR_NOMEM;
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf + have, FILE_SESSION_RECORD_MAX - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = file_store_errno(errno);
            goto out;
        }
        if (n == 0)
            break;
        have += (size_t)n;
        if (have == FILE_SESSION_RECORD_MAX)
            goto out; /* bigger than any record this service writes */
    }
    j = json_loadb(buf, have, JSON_REJECT_DUPLICATES, &jerr);
    rc = json_is_object(j) ? record_from_json(j, rec) : SG_ERR_INTERNAL;
out:
    if (rc != SG_OK && rc != SG_ERR_NOT_FOUND)
        sg_warn("upload session %s: cannot read its record (%s)", id, sg_strerror(rc));
    if (rc != SG_OK)
        file_session_record_free(rec);
    json_decref(j);
    free(buf);
    close(fd);
    return rc;
}

int file_session_record_write(struct file_sessions *ss, const char *id, const struct file_session_record *rec)
{
    char tmp[64], name[64], *text = NULL;
    json_t *j = json_pack("{s:i, s:s, s:I}", "v", 1, "filename", rec->filename, "created", (json_int_t)rec->created);
    int fd = -1, rc = SG_ERR_NOMEM;

    info_name(id, 1, tmp, sizeof tmp);
    info_name(id, 0, name, sizeof name);
    if (!j)
        goto out;
    if (rec->has_length)
        json_object_set_new(j, "length", json_integer((json_int_t)rec->length));
    if (rec->metadata)
        json_object_set_new(j, "metadata", json_string(rec->metadata));
    if (rec->must_not_exist)
        json_object_set_new(j, "if_none_match", json_string("*"));
    if (rec->must_exist || rec->if_match[0])
        json_object_set_new(j, "if_match", json_string(rec->must_exist ? "*" : rec->if_match));
    text = json_dumps(j, JSON_COMPACT);
    if (!text)
        goto out;
    fd = openat(ss->dir_fd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0 || sg_write_all(fd, text, strlen(text), -1) != SG_OK || fsync(fd) != 0 ||
        renameat(ss->dir_fd, tmp, ss->dir_fd, name) != 0) {
        rc = file_store_errno(errno);
        sg_warn("upload session %s: cannot write its record: %s", id, strerror(errno));
        unlinkat(ss->dir_fd, tmp, 0);
        goto out;
    }
    if (fsync(ss->dir_fd) != 0)
        sg_warn("fsync of %s: %s", FILE_SESSION_DIR, strerror(errno));
    rc = SG_OK;
out:
    if (fd >= 0)
        close(fd);
    free(text);
    json_decref(j);
    return rc;
}

/* ---- the data files ---- */

int file_session_create(struct file_sessions *ss, const char *id, const struct file_session_record *rec, int *out)
{
    char name[64];
    int fd, rc;
    *out = -1;
    file_session_data_name(id, name, sizeof name);
    /* The data comes first: a record always has its data, except in a crash during finish or removal. */
    fd = openat(ss->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return file_store_errno(errno);
    rc = file_session_record_write(ss, id, rec);
    if (rc != SG_OK) {
        close(fd);
        unlinkat(ss->dir_fd, name, 0);
        return rc;
    }
    *out = fd;
    return SG_OK;
}

int file_session_stat_data(struct file_sessions *ss, const char *id, struct stat *sb)
{
    char name[64];
    file_session_data_name(id, name, sizeof name);
    if (fstatat(ss->dir_fd, name, sb, AT_SYMLINK_NOFOLLOW) != 0)
        return errno == ENOENT ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    return S_ISREG(sb->st_mode) ? SG_OK : SG_ERR_NOT_FOUND;
}

int file_session_open_data(struct file_sessions *ss, const char *id, int *out, struct stat *sb)
{
    char name[64];
    int fd;
    *out = -1;
    file_session_data_name(id, name, sizeof name);
    fd = openat(ss->dir_fd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT || errno == ELOOP ? SG_ERR_NOT_FOUND : file_store_errno(errno);
    if (fstat(fd, sb) != 0 || !S_ISREG(sb->st_mode)) {
        close(fd);
        return SG_ERR_NOT_FOUND;
    }
    *out = fd;
    return SG_OK;
}

void file_session_remove_record(struct file_sessions *ss, const char *id)
{
    char name[64];
    info_name(id, 0, name, sizeof name);
    if (unlinkat(ss->dir_fd, name, 0) != 0 && errno != ENOENT)
        sg_warn("cannot remove the record of upload session %s: %s", id, strerror(errno));
    if (fsync(ss->dir_fd) != 0)
        sg_warn("fsync of %s: %s", FILE_SESSION_DIR, strerror(errno));
}

void file_session_remove(struct file_sessions *ss, const char *id)
{
    char name[64];
    file_session_data_name(id, name, sizeof name);
    if (unlinkat(ss->dir_fd, name, 0) != 0 && errno != ENOENT)
        sg_warn("cannot remove the data of upload session %s: %s", id, strerror(errno));
    file_session_remove_record(ss, id);
}

int file_session_hash_data(int fd, uint64_t size, char hex[SG_SHA256_HEX])
{
    struct sg_hash h;
    uint8_t *buf = malloc(REHASH_BUF);
    uint64_t off = 0;
    int rc = buf ? sg_hash_init(&h, 0) : SG_ERR_NOMEM;
    if (rc != SG_OK) {
        free(buf);
        return rc;
    }
    while (off < size) {
        size_t want = size - off < REHASH_BUF ? (size_t)(size - off) : REHASH_BUF;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n == 0 ? SG_ERR_INTERNAL : file_store_errno(errno); /* n == 0: the file got shorter */
            break;
        }
        sg_hash_update(&h, buf, (size_t)n);
        off += (uint64_t)n;
    }
    if (rc == SG_OK)
        sg_hash_final(&h, hex, NULL);
    sg_hash_free(&h);
    free(buf);
    return rc;
}

/* ---- claims and the running hash ---- */

int file_sessions_reserve(struct file_sessions *ss)
{
    int rc = SG_OK;
    pthread_mutex_lock(&ss->lock);
    if (ss->count >= ss->max)
        rc = SG_ERR_BUSY;
    else
        ss->count++;
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

void file_sessions_unreserve(struct file_sessions *ss)
{
    pthread_mutex_lock(&ss->lock);
    if (ss->count > 0)
        ss->count--;
    pthread_mutex_unlock(&ss->lock);
}

int file_session_claim(struct file_sessions *ss, const char *id, struct file_session_live **out)
{
    struct file_session_live *l;
    int rc = SG_OK;
    *out = NULL;
    pthread_mutex_lock(&ss->lock);
    for (l = ss->live; l; l = l->next)
        if (strcmp(l->id, id) == 0)
            break;
    if (l && l->is_claimed) {
        rc = SG_ERR_LOCKED;
    } else if (!l) {
        l = calloc(1, sizeof *l);
        if (!l) {
            rc = SG_ERR_NOMEM;
        } else {
            memcpy(l->id, id, FILE_SESSION_ID_HEX + 1);
            l->next = ss->live;
            ss->live = l;
        }
    }
    if (rc == SG_OK) {
        l->is_claimed = 1;
        *out = l;
    }
    pthread_mutex_unlock(&ss->lock);
    return rc;
}

void file_session_drop_hash(struct file_session_live *l)
{
    sg_hash_free(&l->hash);
    l->has_hash = 0;
    l->hashed = 0;
}

void file_session_release(struct file_sessions *ss, struct file_session_live *l, int is_gone, int was_counted)
{
    if (!l)
        return;
    pthread_mutex_lock(&ss->lock);
    l->is_claimed = 0;
    if (is_gone) {
        for (struct file_session_live **pp = &ss->live; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        if (was_counted && ss->count > 0)
            ss->count--;
    } else if (!l->has_hash) {
        /* Nothing worth keeping in memory: a later request starts from the disk alike. */
        for (struct file_session_live **pp = &ss->live; *pp; pp = &(*pp)->next)
            if (*pp == l) {
                *pp = l->next;
                break;
            }
        is_gone = 1;
    }
    pthread_mutex_unlock(&ss->lock);
    if (is_gone) {
        file_session_drop_hash(l);
        free(l);
    }
}

/* ---- the sweep ---- */

/* Returns the length of the id prefix of name when name is ID followed by suffix exactly, else 0. */
static int is_entry(const char *name, const char *suffix)
{
    size_t n = strlen(name), k = strlen(suffix);
    if (n != FILE_SESSION_ID_HEX + k || strcmp(name + FILE_SESSION_ID_HEX, suffix) != 0)
        return 0;
    return strspn(name, "0123456789abcdef") == FILE_SESSION_ID_HEX;
}

/*
 * Removes session id when nobody holds it and it is expired or lost its
 * data. Returns 1 when it was removed.
 */
static int sweep_one(struct file_sessions *ss, const char *id)
{
    struct file_session_live *l;
    struct stat sb;
    int is_expired, has_data;
    if (file_session_claim(ss, id, &l) != SG_OK)
        return 0; /* in use: not expired, whatever its time says */
    has_data = file_session_stat_data(ss, id, &sb) == SG_OK;
    /* A record without data is only a finish or removal cut short: the data is gone already. */
    is_expired = !has_data || file_session_expires(ss, &sb) <= now_s();
    if (is_expired) {
        file_session_remove(ss, id);
        sg_info("upload session %s %s; removed", id, has_data ? "expired" : "had no data");
    }
    file_session_release(ss, l, is_expired, is_expired);
    return is_expired;
}

unsigned file_sessions_sweep(struct file_sessions *ss, int at_start)
{
    unsigned removed = 0;
    int dfd = openat(ss->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        sg_warn("cannot list %s to remove expired uploads: %s", FILE_SESSION_DIR, strerror(errno));
        return 0;
    }
    while ((e = readdir(d)) != NULL) {
        char id[FILE_SESSION_ID_HEX + 1], other[64];
        struct stat sb;
        memcpy(id, e->d_name, FILE_SESSION_ID_HEX);
        id[FILE_SESSION_ID_HEX] = '\0';
        if (is_entry(e->d_name, INFO_SUFFIX)) {
            removed += (unsigned)sweep_one(ss, id);
            continue;
        }
        /* Only at start-up is nobody in the middle of creating a session or writing a record. */
        if (!at_start)
            continue;
        if (is_entry(e->d_name, INFO_SUFFIX TEMP_SUFFIX)) {
            unlinkat(ss->dir_fd, e->d_name, 0);
        } else if (is_entry(e->d_name, DATA_SUFFIX)) {
            info_name(id, 0, other, sizeof other);
            if (fstatat(ss->dir_fd, other, &sb, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
                unlinkat(ss->dir_fd, e->d_name, 0);
                sg_info("upload session %s had no record (cut short at creation); removed", id);
            }
        }
    }
    closedir(d);
    return removed;
}

/* Counts the records in the directory (at start-up, after the sweep). */
static unsigned count_records(struct file_sessions *ss)
{
    unsigned n = 0;
    int dfd = openat(ss->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    struct dirent *e;
    if (!d) {
        if (dfd >= 0)
            close(dfd);
        return 0;
    }
    while ((e = readdir(d)) != NULL)
        n += (unsigned)is_entry(e->d_name, INFO_SUFFIX);
    closedir(d);
    return n;
}

static void *sweeper_main(void *arg)
{
    struct file_sessions *ss = arg;
    int64_t every = ss->expiry_s / 2;
    if (every < SWEEP_MIN_S)
        every = SWEEP_MIN_S;
    if (every > SWEEP_MAX_S)
        every = SWEEP_MAX_S;
    pthread_mutex_lock(&ss->lock);
    while (!ss->is_stopping) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += every;
        while (!ss->is_stopping && pthread_cond_timedwait(&ss->wake, &ss->lock, &until) != ETIMEDOUT)
            ;
        if (ss->is_stopping)
            break;
        pthread_mutex_unlock(&ss->lock);
        file_sessions_sweep(ss, 0);
        pthread_mutex_lock(&ss->lock);
    }
    pthread_mutex_unlock(&ss->lock);
    return NULL;
}

/* Starts the sweeper with every signal blocked (the host's handlers stay on its own threads). */
static int start_sweeper(struct file_sessions *ss)
{
    sigset_t all, old;
    int rc;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&ss->sweeper, NULL, sweeper_main, ss);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

int file_sessions_open(struct file_sessions *ss, struct file_store *st, int64_t expiry_s, unsigned max, char *err,
                       size_t errlen)
{
    pthread_condattr_t attr;
    unsigned removed;
    memset(ss, 0, sizeof *ss);
    ss->dir_fd = -1;
    ss->store = st;
    ss->expiry_s = expiry_s;
    ss->max = max;
    if (pthread_condattr_init(&attr) != 0 || pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) != 0 ||
        pthread_mutex_init(&ss->lock, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        return SG_ERR_SYS;
    }
    if (pthread_cond_init(&ss->wake, &attr) != 0) {
        pthread_mutex_destroy(&ss->lock);
        snprintf(err, errlen, "cannot create a condition variable");
        return SG_ERR_SYS;
    }
    pthread_condattr_destroy(&attr);
    ss->has_lock = 1;
    if (mkdirat(st->root_fd, FILE_SESSION_DIR, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s in the root: %s", FILE_SESSION_DIR, strerror(errno));
        return SG_ERR_SYS;
    }
    /* O_NOFOLLOW: a .sessions symlink planted in the root must not send uploads elsewhere. */
    ss->dir_fd = openat(st->root_fd, FILE_SESSION_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (ss->dir_fd < 0) {
        snprintf(err, errlen, "cannot open %s in the root (it must be a directory, not a symlink): %s",
                 FILE_SESSION_DIR, strerror(errno));
        return SG_ERR_SYS;
    }
    removed = file_sessions_sweep(ss, 1);
    if (removed)
        sg_info("removed %u expired upload session%s", removed, removed == 1 ? "" : "s");
    ss->count = count_records(ss);
    if (start_sweeper(ss) != 0) {
        snprintf(err, errlen, "cannot start the thread that removes expired uploads");
        return SG_ERR_SYS;
    }
    ss->has_sweeper = 1;
    return SG_OK;
}

void file_sessions_close(struct file_sessions *ss)
{
    if (ss->has_sweeper) {
        pthread_mutex_lock(&ss->lock);
        ss->is_stopping = 1;
        pthread_cond_broadcast(&ss->wake);
        pthread_mutex_unlock(&ss->lock);
        pthread_join(ss->sweeper, NULL);
        ss->has_sweeper = 0;
    }
    while (ss->live) {
        struct file_session_live *l = ss->live;
        ss->live = l->next;
        file_session_drop_hash(l);
        free(l);
    }
    if (ss->dir_fd >= 0)
        close(ss->dir_fd);
    ss->dir_fd = -1;
    if (ss->has_lock) {
        pthread_cond_destroy(&ss->wake);
        pthread_mutex_destroy(&ss->lock);
        ss->has_lock = 0;
    }
}
