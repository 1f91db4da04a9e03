/* Configuration file watcher.
 *
 * Editors, kubectl and config-management tools write files in every way
 * there is: in place, by writing a temporary file and renaming it over the
 * original, or (Kubernetes ConfigMap volumes) by swapping a `..data`
 * symlink to a freshly written directory. Watching the file itself misses
 * the last two, so we watch directories: the one holding the path we were
 * given (where renames and the `..data` swap happen) and the one holding
 * the file the path resolves to (where in-place edits of a symlinked file
 * happen), re-resolving after every change. Any event there arms a short
 * debounce; then the content is hashed and only a real change reloads.
 * A slow stat() poll catches what inotify cannot see (e.g. some network
 * filesystems). */
#include "strangler/watch.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include "strangler/log.h"
#include "strangler/worker.h"

#define DEBOUNCE_MS 200
#define POLL_MS 2000
#define WATCH_MASK (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB)

struct sg_watch {
    struct sg_server *srv;
    int ifd;
    struct event *ev, *debounce, *poll;
    char *dir; /* directory of the path as given */
    char *base; /* file name of the path as given */
    char *target_dir; /* directory of the file it resolves to */
    char *target_base; /* its file name */
    int wd_dir, wd_target;
    struct stat last;
};

bool sg_file_hash(const char *path, uint64_t *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    uint64_t h = 0xcbf29ce484222325ull;
    char buf[16384];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (ssize_t i = 0; i < n; i++) {
            h ^= (unsigned char)buf[i];
            h *= 0x100000001b3ull;
        }
    close(fd);
    if (n < 0)
        return false;
    *out = h;
    return true;
}

static char *base_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    return strdup(slash ? slash + 1 : path);
}

static char *dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *slash = strrchr(copy, '/');
    if (!slash) {
        free(copy);
        return strdup(".");
    }
    if (slash == copy)
        slash[1] = '\0';
    else
        *slash = '\0';
    return copy;
}

/* (Re)watches the directory of the resolved file when it moved (a new
 * ConfigMap generation lives in a new directory). */
static void watch_target(struct sg_watch *w)
{
    char resolved[PATH_MAX];
    if (!realpath(w->srv->cfg->path, resolved))
        return;
    char *dir = dir_of(resolved);
    if (!dir)
        return;
    free(w->target_base);
    w->target_base = base_of(resolved);
    if (w->target_dir && strcmp(dir, w->target_dir) == 0) {
        free(dir);
        return;
    }
    if (w->wd_target >= 0 && w->wd_target != w->wd_dir)
        inotify_rm_watch(w->ifd, w->wd_target);
    free(w->target_dir);
    w->target_dir = dir;
    w->wd_target = strcmp(dir, w->dir) == 0 ? w->wd_dir : inotify_add_watch(w->ifd, dir, WATCH_MASK);
}

static void check_now(struct sg_watch *w)
{
    struct sg_server *srv = w->srv;
    uint64_t h;
    stat(srv->cfg->path, &w->last);
    if (!sg_file_hash(srv->cfg->path, &h)) {
        /* Mid-swap the path may not resolve for a moment: the next event
         * or poll tick looks again. */
        sg_debug("config watch: %s not readable yet: %s", srv->cfg->path, strerror(errno));
        return;
    }
    if (h != srv->config_hash) {
        sg_info("config watch: %s changed, reloading", srv->cfg->path);
        struct sg_config_errors errs;
        sg_server_reload(srv, &errs);
        sg_config_errors_free(&errs);
    }
    watch_target(w);
}

static void debounce_cb(evutil_socket_t fd, short what, void *arg)
{
    check_now(arg);
}

static void arm(struct sg_watch *w, uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000 * 1000) };
    evtimer_add(w->debounce, &tv); /* re-adding restarts it: the burst's last event counts */
}

/* Only names that can change what the path reads: the file itself, the
 * ConfigMap's ..data link (and ..data_tmp, renamed over it), and the file
 * the path resolves to. A log file written next to the config must not
 * keep restarting the debounce. */
static bool relevant(const struct sg_watch *w, const struct inotify_event *ev)
{
    if (ev->mask & IN_Q_OVERFLOW)
        return true;
    if (!ev->len)
        return false;
    if (ev->wd == w->wd_dir &&
        (strcmp(ev->name, w->base) == 0 || strncmp(ev->name, "..data", 6) == 0))
        return true;
    return ev->wd == w->wd_target && w->target_base && strcmp(ev->name, w->target_base) == 0;
}

static void inotify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_watch *w = arg;
    char buf[8192] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        for (char *p = buf; p < buf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;
            any = any || relevant(w, ev);
            p += sizeof *ev + ev->len;
        }
    if (any)
        arm(w, DEBOUNCE_MS);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sg_watch *w = arg;
    struct stat st;
    if (stat(w->srv->cfg->path, &st) != 0)
        return;
    if (st.st_ino != w->last.st_ino || st.st_dev != w->last.st_dev || st.st_size != w->last.st_size ||
        st.st_mtim.tv_sec != w->last.st_mtim.tv_sec || st.st_mtim.tv_nsec != w->last.st_mtim.tv_nsec)
        arm(w, 0);
}

struct sg_watch *sg_watch_start(struct event_base *base, struct sg_server *srv)
{
    struct sg_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->srv = srv;
    w->wd_dir = w->wd_target = -1;
    sg_file_hash(srv->cfg->path, &srv->config_hash);
    stat(srv->cfg->path, &w->last);
    w->dir = dir_of(srv->cfg->path);
    w->base = base_of(srv->cfg->path);
    w->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (w->ifd >= 0 && w->dir)
        w->wd_dir = inotify_add_watch(w->ifd, w->dir, WATCH_MASK);
    if (w->wd_dir < 0)
        sg_warn("config watch: inotify unavailable for %s (%s); polling every %dms", srv->cfg->path,
                strerror(errno), POLL_MS);
    else
        w->ev = event_new(base, w->ifd, EV_READ | EV_PERSIST, inotify_cb, w);
    watch_target(w);
    w->debounce = evtimer_new(base, debounce_cb, w);
    w->poll = event_new(base, -1, EV_PERSIST, poll_cb, w);
    struct timeval tv = { POLL_MS / 1000, (POLL_MS % 1000) * 1000 };
    if (w->ev)
        event_add(w->ev, NULL);
    event_add(w->poll, &tv);
    return w;
}

void sg_watch_free(struct sg_watch *w)
{
    if (!w)
        return;
    if (w->ev)
        event_free(w->ev);
    if (w->debounce)
        event_free(w->debounce);
    if (w->poll)
        event_free(w->poll);
    if (w->ifd >= 0)
        close(w->ifd);
    free(w->dir);
    free(w->base);
    free(w->target_dir);
    free(w->target_base);
    free(w);
}
