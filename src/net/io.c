/* Write-through and direct reads for plaintext socket bufferevents: see
 * include/strangler/io.h. */
#include "strangler/io.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "strangler/log.h"

/* The bufferevents written to during this loop turn, each holding a
 * reference so that one freed by its owner meanwhile stays valid (and its
 * socket open) until it is looked at. Two arrays: one is flushed while the
 * other collects what the owners' write callbacks add. */
struct flushq {
    struct event *ev;
    struct bufferevent **v, **spare;
    size_t n, cap, spare_cap;
};

static _Thread_local struct flushq *tq;

static bool flushable(struct bufferevent *bev)
{
    bufferevent_data_cb rcb, wcb;
    bufferevent_event_cb ecb;
    void *arg;
    bufferevent_getcb(bev, &rcb, &wcb, &ecb, &arg);
    /* No callbacks: freed, or parked between owners; leave it to libevent. */
    if (!rcb && !wcb && !ecb)
        return false;
    return (bufferevent_get_enabled(bev) & EV_WRITE) && event_pending(&bev->ev_write, EV_WRITE, NULL) &&
           evbuffer_get_length(bufferevent_get_output(bev)) > 0;
}

/* send(2) for one piece, sendmsg(2) for several, where libevent would use
 * writev(2): the socket calls skip the file layer (position lock, access
 * checks) that read/write/writev go through on every call. An
 * evbuffer_iovec has struct iovec's layout (event2/buffer.h). */
#define SEND_IOV 16

static ssize_t send_out(struct evbuffer *out, evutil_socket_t fd)
{
    struct evbuffer_iovec v[SEND_IOV];
    int n = evbuffer_peek(out, -1, NULL, v, SEND_IOV);
    if (n <= 0)
        return 0;
    if (n > SEND_IOV)
        n = SEND_IOV;
    ssize_t wrote;
    if (n == 1) {
        wrote = send(fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr m = { .msg_iov = (struct iovec *)(void *)v, .msg_iovlen = (size_t)n };
        wrote = sendmsg(fd, &m, MSG_NOSIGNAL);
    }
    if (wrote > 0)
        evbuffer_drain(out, (size_t)wrote);
    return wrote;
}

static void flush_one(struct bufferevent *bev)
{
    if (!flushable(bev))
        return;
    struct evbuffer *out = bufferevent_get_output(bev);
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0)
        return;
    /* Socket bufferevents keep the front of their output frozen and thaw it
     * around their own writes; so do we. */
    evbuffer_unfreeze(out, 1);
    ssize_t wrote = send_out(out, fd);
    evbuffer_freeze(out, 1);
    if (wrote <= 0)
        return; /* EAGAIN or an error: libevent's write event sees it */
    size_t left = evbuffer_get_length(out);
    if (left == 0)
        event_del(&bev->ev_write); /* as libevent's write callback does */
    bufferevent_data_cb rcb, wcb;
    bufferevent_event_cb ecb;
    void *arg;
    bufferevent_getcb(bev, &rcb, &wcb, &ecb, &arg);
    size_t low = 0, high = 0;
    bufferevent_getwatermark(bev, EV_WRITE, &low, &high);
    if (wcb && left <= low)
        wcb(bev, arg);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct flushq *q = arg;
    struct bufferevent **v = q->v;
    size_t n = q->n, cap = q->cap;
    q->v = q->spare;
    q->cap = q->spare_cap;
    q->n = 0;
    for (size_t i = 0; i < n; i++) {
        flush_one(v[i]);
        bufferevent_decref(v[i]);
    }
    q->spare = v;
    q->spare_cap = cap;
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    struct flushq *q = tq;
    struct bufferevent *bev = arg;
    if (!info->n_added || !q)
        return;
    if (q->n && q->v[q->n - 1] == bev)
        return; /* a head is written in several pieces */
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct bufferevent **v = realloc(q->v, cap * sizeof *v);
        if (!v)
            return; /* libevent's write event still writes it */
        q->v = v;
        q->cap = cap;
    }
    bufferevent_incref(bev);
    q->v[q->n++] = bev;
    if (q->n == 1)
        event_active(q->ev, EV_WRITE, 0);
}

/* ---- reads ---------------------------------------------------------------- */

/* libevent 2.1 sizes every socket read with ioctl(FIONREAD) and caps it at
 * 4,096 bytes (EVBUFFER_MAX_READ): two system calls per read, and a
 * streamed body read 4 KiB at a time. This replaces the bufferevent's read
 * event callback with one that reads up to READ_MAX straight into the
 * input buffer, and otherwise behaves as libevent's: the high watermark
 * bounds the read (libevent's own input-buffer callback still suspends and
 * resumes reading around it), EOF and errors disable reading and go to the
 * event callback, the read callback runs once the low watermark is
 * reached. */
#define READ_MAX (64u * 1024u)

static _Thread_local char rbuf[READ_MAX];

static void read_ready(evutil_socket_t fd, short what, void *arg)
{
    struct bufferevent *bev = arg;
    bufferevent_data_cb rcb, wcb;
    bufferevent_event_cb ecb;
    void *cbarg;
    short event = BEV_EVENT_READING;
    bufferevent_incref(bev);
    if (what & EV_TIMEOUT) {
        event |= BEV_EVENT_TIMEOUT;
        goto fail;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t low = 0, high = 0, len = evbuffer_get_length(in), want = READ_MAX;
    bufferevent_getwatermark(bev, EV_READ, &low, &high);
    if (high) {
        if (len >= high) { /* libevent's watermark callback resumes it */
            event_del(&bev->ev_read);
            goto done;
        }
        if (high - len < want)
            want = high - len;
    }
    /* Into the thread's buffer, then one add: reserving READ_MAX in the
     * input buffer would allocate a chunk that size for every small read. */
    ssize_t n = recv(fd, rbuf, want, 0);
    if (n > 0) {
        evbuffer_unfreeze(in, 0);
        if (evbuffer_add(in, rbuf, (size_t)n) < 0) {
            n = -1;
            errno = ENOMEM;
        }
        evbuffer_freeze(in, 0);
    }
    if (n > 0) {
        bufferevent_getcb(bev, &rcb, &wcb, &ecb, &cbarg);
        if (rcb && evbuffer_get_length(in) >= low)
            rcb(bev, cbarg);
        goto done;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        goto done;
    event |= n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR;
fail:
    bufferevent_disable(bev, EV_READ);
    bufferevent_getcb(bev, &rcb, &wcb, &ecb, &cbarg);
    if (ecb)
        ecb(bev, event, cbarg);
done:
    bufferevent_decref(bev);
}

/* Points the bufferevent's read event at read_ready, keeping whether it
 * was pending and its timeout. */
static void take_reads(struct bufferevent *bev)
{
    evutil_socket_t fd = bufferevent_getfd(bev);
    if (fd < 0)
        return;
    struct timeval tv;
    bool pending = event_pending(&bev->ev_read, EV_READ, NULL);
    bool timed = evutil_timerisset(&bev->timeout_read);
    tv = bev->timeout_read;
    event_del(&bev->ev_read);
    event_assign(&bev->ev_read, bufferevent_get_base(bev), fd, EV_READ | EV_PERSIST | EV_FINALIZE, read_ready, bev);
    if (pending)
        event_add(&bev->ev_read, timed ? &tv : NULL);
}

void sg_io_autoflush(struct bufferevent *bev)
{
    if (!tq)
        return;
    take_reads(bev);
    if (!evbuffer_add_cb(bufferevent_get_output(bev), out_cb, bev))
        sg_warn("write-through unavailable for a connection (out of memory)");
    /* What was added before (a response queued while connecting) goes too. */
    if (evbuffer_get_length(bufferevent_get_output(bev))) {
        struct evbuffer_cb_info info = { .n_added = 1 };
        out_cb(NULL, &info, bev);
    }
}

void sg_io_enable(struct bufferevent *bev, short what)
{
    short missing = (short)(what & ~bufferevent_get_enabled(bev));
    if (missing)
        bufferevent_enable(bev, missing);
}

int sg_io_thread_enter(struct event_base *base)
{
    struct flushq *q = calloc(1, sizeof *q);
    if (!q)
        return -1;
    q->ev = event_new(base, -1, 0, flush_cb, q);
    if (!q->ev) {
        free(q);
        return -1;
    }
    tq = q;
    return 0;
}

void sg_io_thread_leave(void)
{
    struct flushq *q = tq;
    if (!q)
        return;
    tq = NULL;
    for (size_t i = 0; i < q->n; i++)
        bufferevent_decref(q->v[i]);
    event_free(q->ev);
    free(q->v);
    free(q->spare);
    free(q);
}
