/* reply_check.h - a backend's answer is believed only when it answers our request with the fields the op promises. */
#ifndef SOCKGATE_GATEWAY_REPLY_CHECK_H
#define SOCKGATE_GATEWAY_REPLY_CHECK_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Checks resp, the header of a backend's answer (its body body_size bytes
 * long), against the request it answers: op and id as sent, service the
 * backend's name ("file"). The id must be the request's; an error frame needs
 * a string code; any other answer needs the fields op promises (protocol.md),
 * each of the right type. Returns SG_OK, or SG_ERR_PROTO with why in err.
 */
int reply_check(const char *service, const char *op, const char *id, const json_t *resp, uint64_t body_size,
                char *err, size_t errlen);

#endif
