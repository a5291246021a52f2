/* error.c - human messages and wire codes for enum sg_err. */
#include "sockgate/error.h"

#include <string.h>

struct err_info {
    const char *code;
    const char *message;
};

/* Indexed by enum sg_err; the wire codes are part of the protocol (docs/protocol.md). */
static const struct err_info errors[SG_ERR__COUNT] = {
    [SG_OK] = {"ok", "success"},
    [SG_ERR_SYS] = {"system_error", "a system call failed"},
    [SG_ERR_NOMEM] = {"out_of_memory", "out of memory"},
    [SG_ERR_INVALID] = {"invalid_request", "invalid request"},
    [SG_ERR_PROTO] = {"protocol_error", "the peer broke the wire protocol"},
    [SG_ERR_TIMEOUT] = {"timeout", "the deadline passed"},
    [SG_ERR_CLOSED] = {"connection_closed", "the peer closed the connection"},
    [SG_ERR_REFUSED] = {"unavailable", "the peer is unreachable"},
    [SG_ERR_TOO_LARGE] = {"too_large", "too large"},
    [SG_ERR_NOT_FOUND] = {"not_found", "not found"},
    [SG_ERR_NOT_ALLOWED] = {"command_not_allowed", "the command is not on the allowlist"},
    [SG_ERR_INVALID_NAME] = {"invalid_name", "invalid file name"},
    [SG_ERR_CHECKSUM] = {"checksum_mismatch", "the checksum does not match the data"},
    [SG_ERR_NO_SPACE] = {"no_space", "no space left on the device"},
    [SG_ERR_BUSY] = {"busy", "too many requests in progress"},
    [SG_ERR_UNAUTHORIZED] = {"unauthorized", "missing or wrong token"},
    [SG_ERR_INTERNAL] = {"internal_error", "internal error"},
    [SG_ERR_PRECONDITION] = {"precondition_failed", "the file is not in the state the request's condition names"},
};

const char *sg_strerror(int err)
{
    if (err < 0 || err >= SG_ERR__COUNT)
        return errors[SG_ERR_INTERNAL].message;
    return errors[err].message;
}

const char *sg_err_code(int err)
{
    if (err < 0 || err >= SG_ERR__COUNT)
        return errors[SG_ERR_INTERNAL].code;
    return errors[err].code;
}

int sg_err_from_code(const char *code)
{
    if (!code)
        return SG_ERR_INTERNAL;
    for (int i = 1; i < SG_ERR__COUNT; i++)
        if (strcmp(errors[i].code, code) == 0)
            return i;
    return SG_ERR_INTERNAL;
}
