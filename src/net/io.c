/* Write-through, direct reads and io_uring batches for plaintext socket
 * bufferevents: see include/strangler/io.h. */
#include "strangler/io.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include <event2/buffer.h>
#include <event2/buffer_compat.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>

#include "strangler/log.h"

/* Operations per io_uring_enter; also the ring's size. */
#define BATCH 64u
/* Pieces of an output buffer written by one send. An evbuffer_iovec has
 * struct iovec's layout (event2/buffer.h). */
#define SEND_IOV 16
/* One read: at most this much (libevent 2.1 reads at most 4 KiB, after an
 * ioctl(FIONREAD) to size it). */
#define READ_MAX (64u * 1024u)
/* With io_uring, the reads of one turn land side by side in an arena of
 * this size: up to 8 readable sockets get READ_MAX each, 64 get 8 KiB. */
#define READ_ARENA (512u * 1024u)

struct iothread;

/* Bufferevents gathered during a loop turn, handed to `run` by `ev` at the
 * end of the turn's callbacks. Each holds a reference, so that one freed by
 * its owner meanwhile stays valid (and its socket open) until it is looked
 * at. Two arrays: one is worked through while the other collects what the
 * owners' callbacks add. */
struct bevq {
    struct event *ev;
    struct bufferevent **v, **spare;
    size_t n, cap, spare_cap;
    void (*run)(struct iothread *t, struct bufferevent **v, size_t n);
    struct iothread *t;
};

struct sendop {
    struct bufferevent *bev;
    size_t len; /* bytes offered */
    struct msghdr m;
    struct evbuffer_iovec v[SEND_IOV];
};

struct iothread {
    struct bevq flush; /* output added this turn */
    struct bevq reads; /* readable this turn; with io_uring only */
    bool uring;        /* the ring is up and working */
    bool ring_made;    /* ... or was: it is torn down at the end */
    struct io_uring ring;
    int res[BATCH]; /* results of the operations in flight, by index */
    struct sendop sends[BATCH];
    struct bufferevent *rbev[BATCH];
    char *rbuf; /* READ_ARENA with io_uring, READ_MAX without */
};

static _Thread_local struct iothread *tio;

/* libevent's accessors (bufferevent_getfd, _getcb, _getwatermark,
 * _get_output) each go through lock macros and, for the socket, the
 * bufferevent's ops table: 40 to 80 instructions a call, a dozen calls per
 * proxied request here. Every bufferevent this file sees is a plaintext
 * socket bufferevent, whose fields event2/bufferevent_struct.h gives
 * (libevent 2.1; its socket bufferevent keeps the descriptor in ev_read,
 * which is what bufferevent_getfd returns for it). */
static evutil_socket_t bev_fd(const struct bufferevent *bev)
{
    return event_get_fd(&bev->ev_read);
}

/* Whether libevent has bev's read or write event added (waiting on
 * epoll): event_pending(ev, what, NULL) without its checks and locking. */
static bool bev_waits(const struct event *ev, short what)
{
    return (ev->ev_evcallback.evcb_flags & EVLIST_INSERTED) && (ev->ev_events & what);
}

/* event_add with a bufferevent's timeout (an unset one: none). */
static void add_timed(struct event *ev, const struct timeval *timeout)
{
    event_add(ev, evutil_timerisset(timeout) ? timeout : NULL);
}

/* ---- the queues ----------------------------------------------------------- */

static void bevq_push(struct bevq *q, struct bufferevent *bev)
{
    if (q->n && q->v[q->n - 1] == bev)
        return; /* a head is written in several pieces */
    if (q->n == q->cap) {
        size_t cap = q->cap ? q->cap * 2 : 64;
        struct bufferevent **v = realloc(q->v, cap * sizeof *v);
        if (!v)
            return; /* libevent's own events still serve it */
        q->v = v;
        q->cap = cap;
    }
    bufferevent_incref(bev);
    q->v[q->n++] = bev;
    if (q->n == 1)
        event_active(q->ev, EV_WRITE, 0);
}

/* Hands out what was gathered; the queue collects anew into the spare. */
static struct bufferevent **bevq_take(struct bevq *q, size_t *n)
{
    struct bufferevent **v = q->v;
    size_t cap = q->cap;
    *n = q->n;
    q->v = q->spare;
    q->cap = q->spare_cap;
    q->n = 0;
    q->spare = v;
    q->spare_cap = cap;
    return v;
}

/* Drops the references of what bevq_take handed out. */
static void bevq_done(struct bufferevent **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bufferevent_decref(v[i]);
}

static void bevq_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct bevq *q = arg;
    size_t n;
    struct bufferevent **v = bevq_take(q, &n);
    q->run(q->t, v, n);
    bevq_done(v, n);
}

static int bevq_init(struct bevq *q, struct event_base *base, struct iothread *t,
                     void (*run)(struct iothread *, struct bufferevent **, size_t))
{
    q->run = run;
    q->t = t;
    q->ev = event_new(base, -1, 0, bevq_cb, q);
    return q->ev ? 0 : -1;
}

static void bevq_free(struct bevq *q)
{
    bevq_done(q->v, q->n);
    if (q->ev)
        event_free(q->ev);
    free(q->v);
    free(q->spare);
}

/* ---- io_uring ------------------------------------------------------------- */

/* Every operation is a send or recv with MSG_DONTWAIT on a non-blocking
 * socket: the kernel completes it while submitting (with -EAGAIN where it
 * would block, instead of waiting for readiness), so one io_uring_enter
 * does what a system call per socket did, and by its return every result is
 * in. Nothing stays in flight across callbacks: the buffers only have to
 * live for the call. */

/* Everything rests on this: a recv with MSG_DONTWAIT on an empty socket,
 * and a send and a sendmsg with MSG_DONTWAIT on a full one, are answered
 * -EAGAIN by the time io_uring_submit returns. A kernel that would rather
 * wait (or knows none of these operations) is not used. */
static int ring_completes_at_once(struct io_uring *ring)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
        return -errno;
    static char fill[4096];
    while (send(sv[1], fill, sizeof fill, MSG_DONTWAIT) > 0)
        ; /* sv[1] can send no more, and nothing was sent to it */
    char byte;
    struct iovec iov = { fill, sizeof fill };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    io_uring_prep_recv(io_uring_get_sqe(ring), sv[1], &byte, 1, MSG_DONTWAIT);
    io_uring_prep_send(io_uring_get_sqe(ring), sv[1], fill, sizeof fill, MSG_NOSIGNAL | MSG_DONTWAIT);
    io_uring_prep_sendmsg(io_uring_get_sqe(ring), sv[1], &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    int rc = io_uring_submit(ring) == 3 && io_uring_cq_ready(ring) == 3 ? 0 : -EOPNOTSUPP;
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(ring, head, cqe)
    {
        if (cqe->res != -EAGAIN)
            rc = -EOPNOTSUPP;
        seen++;
    }
    io_uring_cq_advance(ring, seen);
    close(sv[0]);
    close(sv[1]);
    return rc; /* on failure the caller tears the ring down, which cancels what waits */
}

static int ring_init(struct io_uring *ring)
{
    /* SUBMIT_ALL: one failing operation does not stop the rest; the others
     * save work in the kernel. Each is a hint that older kernels refuse. */
    int rc = io_uring_queue_init(BATCH, ring,
                                 IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SINGLE_ISSUER);
    if (rc == -EINVAL)
        rc = io_uring_queue_init(BATCH, ring, 0);
    if (rc < 0)
        return rc;
    rc = ring_completes_at_once(ring);
    if (rc < 0)
        io_uring_queue_exit(ring);
    return rc;
}

int sg_io_uring_probe(void)
{
    struct io_uring ring;
    int rc = ring_init(&ring);
    if (rc < 0)
        return -rc;
    io_uring_queue_exit(&ring);
    return 0;
}

/* The result of an operation the ring never ran: it is queued again, and
 * done with a plain system call. */
#define NOT_RUN (-ECANCELED)

/* Submits the k prepared operations and gathers their results into
 * t->res. A ring that fails in a way that is not transient is given up:
 * what it did not take is reported as NOT_RUN, and the thread continues
 * with plain system calls. */
static void ring_run(struct iothread *t, unsigned k)
{
    for (unsigned j = 0; j < k; j++)
        t->res[j] = NOT_RUN;
    unsigned got = 0, tries = 0;
    while (got < k) {
        int rc = io_uring_submit_and_wait(&t->ring, 1);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&t->ring, head, cqe)
        {
            uint64_t j = io_uring_cqe_get_data64(cqe);
            if (j < k)
                t->res[j] = cqe->res;
            seen++;
        }
        io_uring_cq_advance(&t->ring, seen);
        got += seen;
        if (rc < 0 && !seen && (++tries > 3 || (rc != -EINTR && rc != -EAGAIN && rc != -EBUSY))) {
            sg_warn("io_uring: %s; this worker goes on with plain system calls", strerror(-rc));
            t->uring = false; /* what is left in the ring is never submitted */
            return;
        }
    }
}

static struct io_uring_sqe *ring_sqe(struct iothread *t, unsigned j)
{
    /* The ring has BATCH entries and at most BATCH operations go in
     * between two submissions: there is always one. */
    struct io_uring_sqe *sqe = io_uring_get_sqe(&t->ring);
    io_uring_sqe_set_data64(sqe, j);
    return sqe;
}

/* ---- writes --------------------------------------------------------------- */

/* libevent's write event for a socket bufferevent is added only while its
 * output holds something: every add to the output adds it (the output
 * buffer's callback in bufferevent_sock.c) and the write that empties the
 * output deletes it, two trips through libevent's event and changelist
 * code per response even when the changelist cancels the pair before
 * epoll sees it. Here the event stays added while the owner wants writing
 * (so libevent's callback finds it pending and does nothing) and waits on
 * no descriptor (-1: it never fires) as long as the socket takes what is
 * written. A short write, or -EAGAIN, points it at the socket, where
 * epoll reports when there is room and write_ready sends the rest; the
 * write that empties the output points it back at nothing. */
static void point_write(struct bufferevent *bev, evutil_socket_t fd);

static bool write_on_socket(const struct bufferevent *bev)
{
    return event_get_fd(&bev->ev_write) >= 0;
}

/* Whether bev's owner wants writing and there is something to write. A
 * bufferevent its owner freed while a queue still held it is written too,
 * as libevent's own write event would have written it. */
static bool flushable(const struct bufferevent *bev)
{
    return (bev->enabled & EV_WRITE) && bev_waits(&bev->ev_write, EV_WRITE) &&
           evbuffer_get_length(bev->output) > 0 && bev_fd(bev) >= 0;
}

/* The front of bev's output as iovecs, if it is to be written now; returns
 * how many (0: nothing to write) and, in *len, how many bytes they hold. */
static int send_prepare(struct bufferevent *bev, struct evbuffer_iovec *v, size_t *len)
{
    if (!flushable(bev)) {
        /* Output while writing is off: when the owner turns it on, libevent
         * adds the write event, which must then report the socket. */
        if (evbuffer_get_length(bev->output) && bev_fd(bev) >= 0 && !write_on_socket(bev))
            point_write(bev, bev_fd(bev));
        return 0;
    }
    int n = evbuffer_peek(bev->output, -1, NULL, v, SEND_IOV);
    n = n <= 0 ? 0 : n > SEND_IOV ? SEND_IOV : n;
    *len = 0;
    for (int i = 0; i < n; i++)
        *len += v[i].iov_len;
    return n;
}

/* As libevent's write callback fails: writing stops, the event callback
 * hears why (errno). */
static void write_failed(struct bufferevent *bev, short what, int err)
{
    bufferevent_disable(bev, EV_WRITE);
    errno = err;
    if (bev->errorcb)
        bev->errorcb(bev, (short)(BEV_EVENT_WRITING | what), bev->cbarg);
}

/* What a send of `offered` bytes from the front of bev's output returned
 * (bytes, or -errno), on as libevent's write callback goes: drained, and
 * the owner's write callback past the low watermark; errors to the event
 * callback. */
static void send_done(struct iothread *t, struct bufferevent *bev, ssize_t wrote, size_t offered)
{
    if (wrote == NOT_RUN || wrote == -EINTR) {
        bevq_push(&t->flush, bev);
        return;
    }
    if (wrote < 0 && wrote != -EAGAIN && wrote != -EWOULDBLOCK) {
        write_failed(bev, BEV_EVENT_ERROR, (int)-wrote);
        return;
    }
    if (wrote <= 0 || (size_t)wrote < offered) { /* the socket is full */
        if (!write_on_socket(bev))
            point_write(bev, bev_fd(bev));
        if (wrote <= 0)
            return;
    }
    struct evbuffer *out = bev->output;
    /* Socket bufferevents keep the front of their output frozen and thaw it
     * around their own writes; so do we. */
    evbuffer_unfreeze(out, 1);
    evbuffer_drain(out, (size_t)wrote);
    evbuffer_freeze(out, 1);
    size_t left = evbuffer_get_length(out);
    if (!left && write_on_socket(bev))
        point_write(bev, -1);
    else if (left && (size_t)wrote == offered)
        bevq_push(&t->flush, bev); /* it all went: more pieces than one send takes */
    if (bev->writecb && left <= bev->wm_write.low)
        bev->writecb(bev, bev->cbarg);
}

/* send(2) for one piece, sendmsg(2) for several, where libevent would use
 * writev(2): the socket calls skip the file layer (position lock, access
 * checks) that read/write/writev go through on every call. */
static void flush_plain(struct iothread *t, struct bufferevent *bev)
{
    struct evbuffer_iovec v[SEND_IOV];
    size_t len;
    int n = send_prepare(bev, v, &len);
    if (!n)
        return;
    evutil_socket_t fd = bev_fd(bev);
    ssize_t wrote;
    if (n == 1) {
        wrote = send(fd, v[0].iov_base, v[0].iov_len, MSG_NOSIGNAL);
    } else {
        struct msghdr m = { .msg_iov = (struct iovec *)(void *)v, .msg_iovlen = (size_t)n };
        wrote = sendmsg(fd, &m, MSG_NOSIGNAL);
    }
    send_done(t, bev, wrote < 0 ? -errno : wrote, len);
}

static bool in_batch(const struct sendop *ops, unsigned k, const struct bufferevent *bev)
{
    for (unsigned j = 0; j < k; j++)
        if (ops[j].bev == bev)
            return true;
    return false;
}

/* The turn's sends: BATCH to an io_uring_enter, or one system call each
 * without io_uring (and once the ring is given up). In a batch, the data
 * stays at the front of each output (frozen there) until send_done drains
 * what was written; owners' write callbacks, run by send_done, may only add
 * behind it. */
static void flush_all(struct iothread *t, struct bufferevent **v, size_t n)
{
    size_t i = 0;
    while (i < n && t->uring) {
        unsigned k = 0;
        for (; i < n && k < BATCH; i++) {
            struct sendop *op = &t->sends[k];
            /* Twice in one batch (written to again after another): the
             * second would send the same bytes; the next batch sees what
             * is left. */
            int cnt = in_batch(t->sends, k, v[i]) ? 0 : send_prepare(v[i], op->v, &op->len);
            if (!cnt)
                continue;
            struct io_uring_sqe *sqe = ring_sqe(t, k);
            evutil_socket_t fd = bev_fd(v[i]);
            if (cnt == 1) {
                io_uring_prep_send(sqe, fd, op->v[0].iov_base, op->v[0].iov_len, MSG_NOSIGNAL | MSG_DONTWAIT);
            } else {
                op->m = (struct msghdr){ .msg_iov = (struct iovec *)(void *)op->v, .msg_iovlen = (size_t)cnt };
                io_uring_prep_sendmsg(sqe, fd, &op->m, MSG_NOSIGNAL | MSG_DONTWAIT);
            }
            op->bev = v[i];
            k++;
        }
        ring_run(t, k);
        for (unsigned j = 0; j < k; j++)
            send_done(t, t->sends[j].bev, t->res[j], t->sends[j].len);
        for (unsigned j = 0; j < k; j++)
            t->sends[j].bev = NULL;
    }
    for (; i < n; i++)
        flush_plain(t, v[i]);
}

static void out_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    if (info->n_added && tio)
        bevq_push(&tio->flush, arg);
}

/* ---- reads ---------------------------------------------------------------- */

/* libevent 2.1 sizes every socket read with ioctl(FIONREAD) and caps it at
 * 4,096 bytes (EVBUFFER_MAX_READ): two system calls per read, and a
 * streamed body read 4 KiB at a time. The bufferevent's read event is
 * pointed at read_ready instead, which reads up to READ_MAX straight into
 * the input buffer, and otherwise behaves as libevent's: the high watermark
 * bounds the read (and holds reading until the owner drains the input;
 * sg_io_read_high), EOF and errors disable reading and go to the
 * event callback, the read callback runs once the low watermark is
 * reached. */

/* The input buffer's callback while reading waits for the input to drain
 * below the high watermark (added by hold_reading, and only then: a
 * callback on the input runs on every add and every drain). */
static void in_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)info;
    struct bufferevent *bev = arg;
    size_t high = bev->wm_read.high;
    if (high && evbuffer_get_length(buf) >= high)
        return;
    evbuffer_remove_cb(buf, in_cb, bev); /* safe: libevent steps past it first */
    if ((bev->enabled & EV_READ) && bev_fd(bev) >= 0 && !bev_waits(&bev->ev_read, EV_READ))
        add_timed(&bev->ev_read, &bev->timeout_read);
}

/* The input is at the high watermark: the read event waits (off epoll)
 * until in_cb sees it drain. Without memory for the callback, the event
 * stays and reports the socket again every turn until the owner drains. */
static void hold_reading(struct bufferevent *bev)
{
    evbuffer_remove_cb(bev->input, in_cb, bev); /* held again after the owner re-enabled reading */
    if (evbuffer_add_cb(bev->input, in_cb, bev))
        event_del(&bev->ev_read);
}

/* How much bev may read now, at most `cap`; 0 when its input is at the
 * high watermark. */
static size_t read_want(struct bufferevent *bev, size_t cap)
{
    size_t high = bev->wm_read.high, len = evbuffer_get_length(bev->input);
    if (!high)
        return cap;
    if (len >= high) {
        hold_reading(bev);
        return 0;
    }
    return high - len < cap ? high - len : cap;
}

static void read_failed(struct bufferevent *bev, short what)
{
    bufferevent_disable(bev, EV_READ);
    if (bev->errorcb)
        bev->errorcb(bev, (short)(BEV_EVENT_READING | what), bev->cbarg);
}

/* sg_io_direct's registrations: written before the workers start, read
 * only afterwards. */
#define DIRECT_MAX 4
static struct {
    void (*readcb)(struct bufferevent *, void *);
    sg_io_direct_fn fn;
} directs[DIRECT_MAX];

void sg_io_direct(void (*readcb)(struct bufferevent *bev, void *arg), sg_io_direct_fn direct)
{
    for (size_t i = 0; i < DIRECT_MAX; i++)
        if (!directs[i].readcb || directs[i].readcb == readcb) {
            directs[i].readcb = readcb;
            directs[i].fn = direct;
            return;
        }
    abort(); /* a programming error: more parsers than DIRECT_MAX */
}

/* How much of buf the owner's parser took where it lies (sg_io_direct):
 * only into an empty input, and only for a read callback with a parser. */
static size_t read_direct(struct bufferevent *bev, const char *buf, size_t n)
{
    if (!bev->readcb || bev->wm_read.low || evbuffer_get_length(bev->input))
        return 0;
    for (size_t i = 0; i < DIRECT_MAX && directs[i].readcb; i++)
        if (directs[i].readcb == bev->readcb)
            return directs[i].fn(bev, buf, n, bev->cbarg);
    return 0;
}

/* What a read into buf returned, n bytes (0: EOF; < 0: -errno), as
 * libevent's read callback would pass it on. */
static void read_done(struct bufferevent *bev, const char *buf, ssize_t n)
{
    if (n > 0) {
        struct evbuffer *in = bev->input;
        size_t used = read_direct(bev, buf, (size_t)n);
        if (used >= (size_t)n)
            return;
        buf += used;
        n -= (ssize_t)used;
        evbuffer_unfreeze(in, 0);
        int rc = evbuffer_add(in, buf, (size_t)n);
        evbuffer_freeze(in, 0);
        if (rc < 0) {
            errno = ENOMEM;
            read_failed(bev, BEV_EVENT_ERROR);
            return;
        }
        if (bev->readcb && evbuffer_get_length(in) >= bev->wm_read.low)
            bev->readcb(bev, bev->cbarg);
        return;
    }
    if (n == -EAGAIN || n == -EWOULDBLOCK || n == -EINTR)
        return;
    if (n < 0)
        errno = (int)-n; /* for an event callback that asks what failed */
    read_failed(bev, n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR);
}

/* Into the thread's buffer, then one add: reserving READ_MAX in the input
 * buffer would allocate a chunk that size for every small read. */
static void read_plain(struct iothread *t, struct bufferevent *bev)
{
    size_t want = read_want(bev, READ_MAX);
    if (!want)
        return;
    ssize_t n = recv(bev_fd(bev), t->rbuf, want, 0);
    read_done(bev, t->rbuf, n < 0 ? -errno : n);
}

/* Between the turn's read event and the batch, the owner may have stopped
 * its reading. (One freed meanwhile reads on until its last reference
 * goes, as libevent's own read event would; with no callbacks left, the
 * bytes go nowhere.) */
static bool still_reading(const struct bufferevent *bev)
{
    return bev_fd(bev) >= 0 && bev_waits(&bev->ev_read, EV_READ);
}

/* The turn's reads (queued with io_uring only), BATCH to an io_uring_enter,
 * each into its own slice of the arena; then, in the order the sockets were
 * reported readable, what each read means. The data of every read is taken
 * from its socket before any owner sees its own: an owner that stops
 * another's reading in its read callback (backpressure) gets that other's
 * bytes in the input buffer and its read callback called, as a bufferevent
 * with deferred callbacks would. */
static void read_all(struct iothread *t, struct bufferevent **v, size_t n)
{
    /* One slice per socket a batch reads, at least 8 (no read above
     * READ_MAX) and at most BATCH: 64 KiB each for up to 8 sockets, 8 KiB
     * each for 64 or more. */
    size_t slices = n < READ_ARENA / READ_MAX ? READ_ARENA / READ_MAX : n > BATCH ? BATCH : n;
    size_t slice = READ_ARENA / slices, i = 0;
    while (i < n && t->uring) {
        unsigned k = 0;
        for (; i < n && k < BATCH; i++) {
            size_t want = still_reading(v[i]) ? read_want(v[i], slice) : 0;
            if (!want)
                continue;
            io_uring_prep_recv(ring_sqe(t, k), bev_fd(v[i]), t->rbuf + k * slice, want, MSG_DONTWAIT);
            t->rbev[k++] = v[i];
        }
        ring_run(t, k);
        for (unsigned j = 0; j < k; j++)
            if (t->res[j] != NOT_RUN) /* else the read event reports it again */
                read_done(t->rbev[j], t->rbuf + j * slice, t->res[j]);
    }
    for (; i < n; i++) /* the ring was given up */
        if (still_reading(v[i]))
            read_plain(t, v[i]);
}

static void read_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct bufferevent *bev = arg;
    struct iothread *t = tio;
    if (t && t->uring && !(what & EV_TIMEOUT)) {
        bevq_push(&t->reads, bev);
        return;
    }
    bufferevent_incref(bev);
    if (what & EV_TIMEOUT)
        read_failed(bev, BEV_EVENT_TIMEOUT);
    else if (t)
        read_plain(t, bev);
    bufferevent_decref(bev);
}

/* ---- the events ----------------------------------------------------------- */

/* The write event's callback, in place of libevent's: while the event
 * waits on the socket (after a short write), it sends what is left with
 * the turn's other writes; on a write timeout with output still waiting,
 * it fails as libevent's would. */
static void write_ready(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    struct bufferevent *bev = arg;
    if (!evbuffer_get_length(bev->output))
        return; /* a write timeout with nothing to write is not one */
    if (what & EV_TIMEOUT) {
        bufferevent_incref(bev);
        write_failed(bev, BEV_EVENT_TIMEOUT, ETIMEDOUT);
        bufferevent_decref(bev);
    } else if (tio) {
        bevq_push(&tio->flush, bev);
    }
}

/* Points one of the bufferevent's events at `fd` and our callback, keeping
 * whether it was pending and its timeout. */
static void point_event(struct bufferevent *bev, struct event *ev, evutil_socket_t fd, short what,
                        const struct timeval *timeout, event_callback_fn cb)
{
    bool pending = bev_waits(ev, what);
    struct timeval tv = *timeout;
    event_del(ev);
    event_assign(ev, bufferevent_get_base(bev), fd, (short)(what | EV_PERSIST | EV_FINALIZE), cb, bev);
    if (pending)
        add_timed(ev, &tv);
}

/* The write event waits on the socket (fd), or on nothing (-1). */
static void point_write(struct bufferevent *bev, evutil_socket_t fd)
{
    point_event(bev, &bev->ev_write, fd, EV_WRITE, &bev->timeout_write, write_ready);
}

/* ---- setup ---------------------------------------------------------------- */

bool sg_io_autoflush(struct bufferevent *bev)
{
    if (!tio || bev_fd(bev) < 0)
        return true;
    /* libevent's own output callback (bufferevent_sock.c) adds the write
     * event when output arrives and the event is not pending: ours always
     * is while writing is on, so all it would do is ask, on every add.
     * It is not exported, nor is its entry kept, so it cannot be removed
     * alone: evbuffer_setcb(NULL) removes every callback of the buffer
     * (buffer_compat.h), a socket bufferevent's output having only that
     * one, and ours goes on. Without memory for ours, the bufferevent
     * could not write at all. */
    evbuffer_setcb(bev->output, NULL, NULL);
    if (!evbuffer_add_cb(bev->output, out_cb, bev)) {
        sg_warn("out of memory for a connection's write path");
        return false;
    }
    point_event(bev, &bev->ev_read, bev_fd(bev), EV_READ, &bev->timeout_read, read_ready);
    point_write(bev, -1);
    /* libevent adds its write event when the owner enables writing, and
     * ours stays added from then. Enabled before this: added now. */
    if ((bev->enabled & EV_WRITE) && !bev_waits(&bev->ev_write, EV_WRITE))
        add_timed(&bev->ev_write, &bev->timeout_write);
    /* What was added before (a response queued while connecting) goes too. */
    if (evbuffer_get_length(bufferevent_get_output(bev)))
        bevq_push(&tio->flush, bev);
    return true;
}

void sg_io_read_high(struct bufferevent *bev, size_t high)
{
    if (!tio || event_get_callback(&bev->ev_read) != read_ready) {
        bufferevent_setwatermark(bev, EV_READ, 0, high);
        return;
    }
    /* Without libevent's watermark callback (it would run on every add to
     * and drain from the input, re-adding the read event each time):
     * read_want never reads past `high`, hold_reading waits for the drain. */
    bufferevent_setwatermark(bev, EV_READ, 0, 0);
    bev->wm_read.high = high;
}

void sg_io_enable(struct bufferevent *bev, short what)
{
    short missing = (short)(what & ~bufferevent_get_enabled(bev));
    if (missing)
        bufferevent_enable(bev, missing);
}

int sg_io_thread_enter(struct event_base *base, bool uring, int *uring_error)
{
    *uring_error = 0;
    struct iothread *t = calloc(1, sizeof *t);
    if (!t)
        return -1;
    if (uring) {
        int rc = ring_init(&t->ring);
        t->uring = t->ring_made = rc == 0;
        *uring_error = rc < 0 ? -rc : 0;
    }
    t->rbuf = malloc(t->uring ? READ_ARENA : READ_MAX);
    if (!t->rbuf || bevq_init(&t->flush, base, t, flush_all) < 0 || bevq_init(&t->reads, base, t, read_all) < 0) {
        tio = t;
        sg_io_thread_leave();
        return -1;
    }
    tio = t;
    return t->uring ? 1 : 0;
}

void sg_io_thread_leave(void)
{
    struct iothread *t = tio;
    if (!t)
        return;
    tio = NULL;
    bevq_free(&t->flush);
    bevq_free(&t->reads);
    if (t->ring_made)
        io_uring_queue_exit(&t->ring);
    free(t->rbuf);
    free(t);
}
