/* files.h - what the api_files*.c handlers share. */
#ifndef SOCKGATE_GATEWAY_FILES_H
#define SOCKGATE_GATEWAY_FILES_H

#include <jansson.h>
#include <stddef.h>

struct request;

/*
 * Queues result (stolen: {"name", "size", "sha256", "created"}) with a
 * Location header naming the file: 201 when the file was created, 200 when
 * it replaced one ("created": false).
 */
int files_respond_created(struct request *rq, json_t *result);

/*
 * Turns the request's If-None-Match (a write: only "*") and If-Match ("*" or
 * one of our strong ETags) into the file frame's if_none_match / if_match in
 * *out (new object, NULL when there is no condition). An If-Match that can
 * match no version (a weak or foreign tag) fails with 412 at once. Errors are
 * recorded in rq.
 */
int files_conditions(struct request *rq, json_t **out);

/* Percent-encodes name as one URL path segment into out (outlen >= 3 * strlen(name) + 1 to never truncate). */
void files_url_encode(const char *name, char *out, size_t outlen);

#endif
