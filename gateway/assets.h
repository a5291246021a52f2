/* assets.h - files compiled into the binary by cmake/embed.cmake (the page, the OpenAPI document). */
#ifndef SOCKGATE_GATEWAY_ASSETS_H
#define SOCKGATE_GATEWAY_ASSETS_H

#include <stddef.h>

/* One embedded file; path starts with "/" and is relative to the embedded folder. */
struct asset {
    const char *path;
    const unsigned char *data;
    size_t len;
};

/* Every file of web/ (may be empty), terminated by an entry with path NULL. */
extern const struct asset web_assets[];

/* docs/openapi.json as "/openapi.json", terminated by an entry with path NULL. */
extern const struct asset openapi_assets[];

#endif
