/*
 * session.h - private to backends/file: upload sessions, the unfinished
 * uploads that outlive a connection and a restart (resumable uploads, tus).
 * Each lives in ROOT/.sessions/ as ID.data (the bytes so far: its size is the
 * offset) and ID.info (a small JSON record: target name, length, metadata,
 * creation time, conditions); see docs/internals/file.md, "Upload sessions".
 */
#ifndef SOCKGATE_FILE_SESSION_H
#define SOCKGATE_FILE_SESSION_H

#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>

#include "sockgate/hash.h"
#include "store.h"

#define FILE_SESSION_DIR ".sessions"
/* A session id: 128 random bits as 32 lower-case hex digits. */
#define FILE_SESSION_ID_HEX 32
/* The largest metadata string a session keeps (tus's Upload-Metadata, opaque here). */
#define FILE_SESSION_METADATA_MAX 16384u
/*
 * The largest record file read back: its metadata as JSON (a control
 * character escapes to 6 bytes, \u001f) plus a few short fields.
 */
#define FILE_SESSION_RECORD_MAX (FILE_SESSION_METADATA_MAX * 6u + 4096u)

/* What a session's record (ID.info) holds. */
struct file_session_record {
    char filename[256];      /* the name the file gets when finished (valid per file_name_check) */
    int has_length;          /* 0: deferred (tus Upload-Defer-Length), set later */
    uint64_t length;
    char *metadata;          /* malloc'd, or NULL when none */
    int64_t created;         /* Unix seconds */
    int must_not_exist;      /* the finish's condition: if_none_match "*" */
    int must_exist;          /* if_match "*" */
    char if_match[SG_SHA256_HEX]; /* if_match sha256, "" when none */
};

/*
 * A session's state in this process: the claim that makes requests on one
 * session take turns, and the running sha256 of its bytes while appends are
 * contiguous. Only the claimer touches the hash.
 */
struct file_session_live {
    char id[FILE_SESSION_ID_HEX + 1];
    int is_claimed;
    int has_hash;            /* hash covers bytes [0, hashed) of the data */
    uint64_t hashed;
    struct sg_hash hash;
    struct file_session_live *next;
};

/*
 * Every session of one root. lock guards live and count; the files of a
 * session are only changed by the one who claimed it.
 */
struct file_sessions {
    struct file_store *store; /* borrowed */
    int dir_fd;              /* ROOT/.sessions */
    int64_t expiry_s;        /* a session unchanged this long is gone */
    unsigned max;            /* sessions at once (on disk) */
    pthread_mutex_t lock;
    pthread_cond_t wake;     /* the sweeper's sleep; signalled to stop it */
    struct file_session_live *live;
    unsigned count;          /* sessions on disk (records), reserved ones included */
    pthread_t sweeper;
    int is_stopping;
    int has_sweeper;
    int has_lock;
};

/*
 * Opens (creating) ROOT/.sessions, removes what a crash or expiry left (see
 * file_sessions_sweep), counts the sessions, and starts the thread that
 * sweeps expired ones periodically. SG_OK or an sg_err value with why in err.
 */
int file_sessions_open(struct file_sessions *ss, struct file_store *st, int64_t expiry_s, unsigned max, char *err,
                       size_t errlen);

/* Stops the sweeper and frees everything (safe on a failed or zeroed ss with dir_fd -1). */
void file_sessions_close(struct file_sessions *ss);

/*
 * Removes expired sessions (and, when at_start, what a crash left: records
 * without data, data without record, half-written records) that nobody has
 * claimed. Returns how many sessions were removed.
 */
unsigned file_sessions_sweep(struct file_sessions *ss, int at_start);

/* Returns 1 when id is FILE_SESSION_ID_HEX lower-case hex digits. */
int file_session_id_valid(const char *id);

/* Writes a new random id into id; SG_OK or SG_ERR_SYS. */
int file_session_new_id(char id[FILE_SESSION_ID_HEX + 1]);

/* Counts one more session, unless max are there already (SG_ERR_BUSY). */
int file_sessions_reserve(struct file_sessions *ss);

/* Gives back a place reserved for a session that was never made. */
void file_sessions_unreserve(struct file_sessions *ss);

/*
 * Claims session id for the caller (the entry is borrowed until release).
 * SG_OK; SG_ERR_LOCKED when another request holds it; SG_ERR_NOMEM.
 */
int file_session_claim(struct file_sessions *ss, const char *id, struct file_session_live **out);

/*
 * Ends a claim (NULL is fine). is_gone: the session left the disk (finished,
 * aborted, expired, or never was): its entry is freed, and when counted its
 * count released.
 */
void file_session_release(struct file_sessions *ss, struct file_session_live *l, int is_gone, int was_counted);

/* Drops the running hash of a claimed session (it no longer matches the data). */
void file_session_drop_hash(struct file_session_live *l);

/* Reads the record of id; SG_OK, SG_ERR_NOT_FOUND, or another sg_err value (a damaged record: SG_ERR_INTERNAL). */
int file_session_record_read(struct file_sessions *ss, const char *id, struct file_session_record *rec);

/* Writes the record of id durably and atomically (temporary record, fsync, rename); SG_OK or an sg_err value. */
int file_session_record_write(struct file_sessions *ss, const char *id, const struct file_session_record *rec);

/* Frees what rec holds. */
void file_session_record_free(struct file_session_record *rec);

/* Creates the empty data file of a new session (fd open read-write) and its record; SG_OK or an sg_err value. */
int file_session_create(struct file_sessions *ss, const char *id, const struct file_session_record *rec, int *fd);

/* Opens the data file of id read-write and fills *sb; SG_OK, SG_ERR_NOT_FOUND or an sg_err value. */
int file_session_open_data(struct file_sessions *ss, const char *id, int *fd, struct stat *sb);

/* Fills *sb for the data file of id; SG_OK or SG_ERR_NOT_FOUND. */
int file_session_stat_data(struct file_sessions *ss, const char *id, struct stat *sb);

/* Removes the data and record of id (best effort), then fsyncs the directory. */
void file_session_remove(struct file_sessions *ss, const char *id);

/* Removes only the record of id (after its data was renamed into place), then fsyncs the directory. */
void file_session_remove_record(struct file_sessions *ss, const char *id);

/* Returns when a session whose data file has stat sb expires (Unix seconds): its last change plus the expiry. */
int64_t file_session_expires(const struct file_sessions *ss, const struct stat *sb);

/* Writes the data file's name of id ("ID.data") into buf (at least FILE_SESSION_ID_HEX + 6 bytes). */
void file_session_data_name(const char *id, char *buf, size_t buflen);

/* Computes the sha256 of the first size bytes of fd by reading them (pread); SG_OK or an sg_err value. */
int file_session_hash_data(int fd, uint64_t size, char hex[SG_SHA256_HEX]);

#endif
