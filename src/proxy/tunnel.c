/* A byte tunnel between two bufferevents (WebSocket after 101), with the
 * same watermark backpressure as the proxied bodies: a side stops reading
 * while the other side's output is above TUNNEL_HIGH. */
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>

#include "strangler/h1_server.h"
#include "strangler/worker.h"

#define TUNNEL_HIGH (256u * 1024u)

struct tunnel {
    struct sg_worker *w;
    struct bufferevent *side[2];
    bool eof[2];
    bool closed;
};

static void tunnel_free(void *arg)
{
    free(arg);
}

static void tunnel_close(struct tunnel *t)
{
    if (t->closed)
        return;
    t->closed = true;
    for (int i = 0; i < 2; i++)
        if (t->side[i])
            bufferevent_free(t->side[i]);
    sg_worker_defer(t->w, tunnel_free, t);
}

static int index_of(struct tunnel *t, struct bufferevent *bev)
{
    return t->side[0] == bev ? 0 : 1;
}

static void pump(struct tunnel *t, int from)
{
    struct bufferevent *src = t->side[from], *dst = t->side[!from];
    evbuffer_add_buffer(bufferevent_get_output(dst), bufferevent_get_input(src));
    if (evbuffer_get_length(bufferevent_get_output(dst)) > TUNNEL_HIGH)
        bufferevent_disable(src, EV_READ);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    struct tunnel *t = arg;
    pump(t, index_of(t, bev));
}

/* The other side drained: read again from this side's peer. */
static void write_cb(struct bufferevent *bev, void *arg)
{
    struct tunnel *t = arg;
    int i = index_of(t, bev);
    if (t->eof[!i]) {
        if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
            tunnel_close(t);
        return;
    }
    bufferevent_enable(t->side[!i], EV_READ);
}

/* One side closed: flush what it sent to the other, then close both. */
static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct tunnel *t = arg;
    int i = index_of(t, bev);
    if (what & BEV_EVENT_EOF) {
        pump(t, i);
        t->eof[i] = true;
        struct bufferevent *peer = t->side[!i];
        if (evbuffer_get_length(bufferevent_get_output(peer)) > 0) {
            bufferevent_disable(bev, EV_READ);
            bufferevent_setwatermark(peer, EV_WRITE, 0, 0);
            return;
        }
    }
    tunnel_close(t);
}

void sg_tunnel_start(struct sg_worker *w, struct bufferevent *a, struct bufferevent *b)
{
    struct tunnel *t = calloc(1, sizeof *t);
    if (!t) {
        bufferevent_free(a);
        bufferevent_free(b);
        return;
    }
    t->w = w;
    t->side[0] = a;
    t->side[1] = b;
    for (int i = 0; i < 2; i++) {
        bufferevent_setcb(t->side[i], read_cb, write_cb, event_cb, t);
        bufferevent_setwatermark(t->side[i], EV_READ, 0, 0);
        bufferevent_setwatermark(t->side[i], EV_WRITE, TUNNEL_HIGH / 4, 0);
        bufferevent_set_timeouts(t->side[i], NULL, NULL);
        bufferevent_enable(t->side[i], EV_READ | EV_WRITE);
    }
    /* Bytes that arrived with the upgrade request or the 101 response. */
    pump(t, 0);
    pump(t, 1);
}
