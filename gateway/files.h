/* files.h - what the api_files*.c handlers share. */
#ifndef SOCKGATE_GATEWAY_FILES_H
#define SOCKGATE_GATEWAY_FILES_H

#include <jansson.h>
#include <stddef.h>

struct request;

/* Queues 201 with result (stolen: {"name", "size", "sha256"}) and a Location header naming the file. */
int files_respond_created(struct request *rq, json_t *result);

/* Percent-encodes name as one URL path segment into out (outlen >= 3 * strlen(name) + 1 to never truncate). */
void files_url_encode(const char *name, char *out, size_t outlen);

#endif
