/* The effective configuration as JSON, for GET /config. */
#ifndef STRANGLER_CONFIG_JSON_H
#define STRANGLER_CONFIG_JSON_H

#include "strangler/config.h"

struct evbuffer;

/* Durations as the contract writes them ("1500ms", "5s", "2m"), sizes in
 * bytes. Any string containing a value that came from ${ENV} is replaced
 * by "<redacted>": environment variables are where secrets live. */
void sg_config_json(struct evbuffer *out, const struct sg_config *cfg);

#endif
