/* Reload on any change to the configuration file (main thread). */
#ifndef STRANGLER_WATCH_H
#define STRANGLER_WATCH_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct sg_server;
struct sg_watch;

/* Watches srv->cfg->path: in-place writes, atomic renames over it, and
 * the Kubernetes ConfigMap layout (the file is a symlink through a
 * `..data` symlink that is swapped to a new directory). Bursts are
 * debounced; content identical to what was last loaded is not reloaded.
 * NULL (logged) if inotify is unavailable: SIGHUP and POST /reload remain. */
struct sg_watch *sg_watch_start(struct event_base *base, struct sg_server *srv);
void sg_watch_free(struct sg_watch *w);

/* FNV-1a 64 of a file's content; false if it cannot be read. */
bool sg_file_hash(const char *path, uint64_t *out);

#endif
