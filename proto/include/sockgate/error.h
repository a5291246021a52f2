/* error.h - the one error enum every sockgate module returns. */
#ifndef SOCKGATE_ERROR_H
#define SOCKGATE_ERROR_H

/*
 * Functions that can fail return int: SG_OK (0) or one of these values.
 * SG_ERR_SYS means errno holds the cause. The wire form of each value
 * (sg_err_code) is the snake_case string sent in a frame's "error.code".
 */
enum sg_err {
    SG_OK = 0,
    SG_ERR_SYS,          /* a system call failed; see errno */
    SG_ERR_NOMEM,        /* out of memory */
    SG_ERR_INVALID,      /* bad argument or request field */
    SG_ERR_PROTO,        /* the peer broke the wire protocol */
    SG_ERR_TIMEOUT,      /* a deadline passed */
    SG_ERR_CLOSED,       /* the peer closed the connection */
    SG_ERR_REFUSED,      /* connection refused or peer unreachable */
    SG_ERR_TOO_LARGE,    /* a size over its limit */
    SG_ERR_NOT_FOUND,    /* no such file, route or peer */
    SG_ERR_NOT_ALLOWED,  /* policy forbids it (command not on the allowlist) */
    SG_ERR_INVALID_NAME, /* a file name the file service refuses */
    SG_ERR_CHECKSUM,     /* md5/sha256 given by the client does not match */
    SG_ERR_NO_SPACE,     /* the disk is full */
    SG_ERR_BUSY,         /* a limit on concurrent work is reached */
    SG_ERR_UNAUTHORIZED, /* missing or wrong token */
    SG_ERR_INTERNAL,     /* a bug or an unexpected state */
    SG_ERR_PRECONDITION, /* the file is not in the state the request made a condition (create only, this version) */
    SG_ERR__COUNT
};

/* Returns a static, human-readable sentence for err (never NULL). */
const char *sg_strerror(int err);

/* Returns the static snake_case wire code for err, e.g. "protocol_error". */
const char *sg_err_code(int err);

/* Returns the enum value for a wire code, or SG_ERR_INTERNAL when unknown. */
int sg_err_from_code(const char *code);

#endif
