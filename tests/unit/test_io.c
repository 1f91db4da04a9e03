/* Unit tests for the workers' socket I/O (src/net/io.c): write-through at
 * the end of the loop turn and direct reads, each with io_uring batches and
 * with plain system calls. Real sockets (socketpairs) and a real libevent
 * loop; the peers are read and written with plain calls. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h> /* the read event, to see whether it waits */
#include <event2/event.h>

#include "strangler/io.h"

/* More than one io_uring batch (64) of sockets. */
#define NCONN 100

struct conn {
    struct bufferevent *bev;
    int peer;
    struct evbuffer *got; /* what the read callback took from the input */
    unsigned reads, writes;
    short events; /* what the event callback saw, or-ed */
    struct conn *other; /* for callbacks that act on another connection */
    void (*on_read)(struct conn *c);
    void (*on_write)(struct conn *c);
    /* sg_io_direct: how much the parser takes of what it is handed, what
     * it took, how often it was asked, and whether it then stops the
     * owner's callbacks (as an owner that closes the connection does) */
    size_t direct_take;
    struct evbuffer *direct_got;
    unsigned directs;
    bool direct_unhook;
};

struct fixture {
    struct event_base *base;
    bool uring;
    struct conn c[NCONN];
};

static void rcb(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    c->reads++;
    evbuffer_add_buffer(c->got, bufferevent_get_input(bev));
    if (c->on_read)
        c->on_read(c);
}

static void wcb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    c->writes++;
    if (c->on_write)
        c->on_write(c);
}

static void ecb(struct bufferevent *bev, short what, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    c->events |= what;
}

static int setup(void **state, bool uring)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->base = event_base_new();
    assert_non_null(f->base);
    int err = 0, on = sg_io_thread_enter(f->base, uring, &err);
    assert_true(on >= 0);
    if (uring && on == 0) {
        /* The kernel refuses io_uring here (err says why); the plain calls
         * are tested by the other half. */
        print_message("io_uring unavailable (%s): its half is not run\n", strerror(err));
        sg_io_thread_leave();
        event_base_free(f->base);
        free(f);
        skip();
    }
    assert_int_equal(on, uring ? 1 : 0);
    f->uring = uring;
    for (int i = 0; i < NCONN; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        struct conn *c = &f->c[i];
        c->peer = sv[1];
        c->got = evbuffer_new();
        c->bev = bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
        assert_non_null(c->bev);
        bufferevent_setcb(c->bev, rcb, wcb, ecb, c);
        bufferevent_enable(c->bev, EV_READ | EV_WRITE);
        assert_true(sg_io_autoflush(c->bev));
    }
    *state = f;
    return 0;
}

static int setup_uring(void **state)
{
    return setup(state, true);
}

static int setup_plain(void **state)
{
    return setup(state, false);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < NCONN; i++) {
        if (f->c[i].bev)
            bufferevent_free(f->c[i].bev);
        evbuffer_free(f->c[i].got);
        close(f->c[i].peer);
    }
    event_base_loop(f->base, EVLOOP_NONBLOCK); /* deferred frees */
    sg_io_thread_leave();
    event_base_free(f->base);
    free(f);
    return 0;
}

static void turn(struct fixture *f)
{
    event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
}

/* Everything a peer has to read now. */
static size_t drain_peer(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    for (;;) {
        ssize_t n = recv(fd, buf + have, cap - have, MSG_DONTWAIT);
        if (n <= 0)
            return have;
        have += (size_t)n;
    }
}

static void write_all(int fd, const char *p, size_t len)
{
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* n bytes in a pattern that a lost, doubled or reordered piece breaks. */
static unsigned char *pattern(size_t n, unsigned seed)
{
    unsigned char *p = malloc(n);
    assert_non_null(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(i * seed + i / 1000);
    return p;
}

/* One turn writes what every connection's owner added, in order, and
 * calls each write callback once its output is empty. */
static void test_writes_go_out_in_one_turn(void **state)
{
    struct fixture *f = *state;
    char want[64], got[256];
    for (int i = 0; i < NCONN; i++) {
        snprintf(want, sizeof want, "response %d\n", i);
        bufferevent_write(f->c[i].bev, want, strlen(want));
        bufferevent_write(f->c[i].bev, "end\n", 4); /* a second piece */
    }
    turn(f);
    for (int i = 0; i < NCONN; i++) {
        snprintf(want, sizeof want, "response %d\nend\n", i);
        size_t n = drain_peer(f->c[i].peer, got, sizeof got);
        assert_int_equal(n, strlen(want));
        assert_memory_equal(got, want, n);
        assert_int_equal(f->c[i].writes, 1);
        assert_int_equal(evbuffer_get_length(bufferevent_get_output(f->c[i].bev)), 0);
    }
}

/* A connection written to, then another, then the first again within one
 * turn is queued twice: its bytes must still go out once. */
static void test_written_twice_in_a_turn(void **state)
{
    struct fixture *f = *state;
    char got[64];
    bufferevent_write(f->c[0].bev, "a1", 2);
    bufferevent_write(f->c[1].bev, "b1", 2);
    bufferevent_write(f->c[0].bev, "a2", 2);
    turn(f);
    turn(f);
    assert_int_equal(drain_peer(f->c[0].peer, got, sizeof got), 4);
    assert_memory_equal(got, "a1a2", 4);
    assert_int_equal(drain_peer(f->c[1].peer, got, sizeof got), 2);
    assert_memory_equal(got, "b1", 2);
}

static void write_to_other(struct conn *c)
{
    if (c->writes == 1)
        bufferevent_write(c->other->bev, "relayed", 7);
}

/* A write callback that writes to another connection: that goes out in
 * the same turn too. */
static void test_write_callback_writes_again(void **state)
{
    struct fixture *f = *state;
    char got[64];
    f->c[0].other = &f->c[1];
    f->c[0].on_write = write_to_other;
    bufferevent_write(f->c[0].bev, "first", 5);
    turn(f);
    assert_int_equal(drain_peer(f->c[0].peer, got, sizeof got), 5);
    assert_int_equal(drain_peer(f->c[1].peer, got, sizeof got), 7);
    assert_memory_equal(got, "relayed", 7);
}

/* A peer that is gone: the error reaches the event callback as an error
 * while writing, never a signal or a hang. */
static void test_write_to_a_closed_peer(void **state)
{
    struct fixture *f = *state;
    close(f->c[0].peer);
    f->c[0].peer = -1;
    bufferevent_write(f->c[0].bev, "lost", 4);
    for (int i = 0; i < 10 && !(f->c[0].events & BEV_EVENT_ERROR); i++)
        turn(f);
    assert_true(f->c[0].events & BEV_EVENT_ERROR);
    assert_true(f->c[0].events & BEV_EVENT_WRITING);
}

/* More than the socket holds, to a peer that reads only later: the rest
 * waits in the output and goes out, whole and in order, as the peer makes
 * room (the write event is edge-triggered: it must report the full socket
 * having room again). The write callback runs once, when all is out. */
static void test_write_larger_than_the_socket(void **state)
{
    struct fixture *f = *state;
    enum { TOTAL = 4 << 20 };
    struct conn *c = &f->c[0];
    unsigned char *blob = pattern(TOTAL, 13), *got = malloc(TOTAL);
    assert_non_null(got);
    bufferevent_write(c->bev, blob, TOTAL);
    turn(f);
    assert_true(evbuffer_get_length(bufferevent_get_output(c->bev)) > 0); /* the socket is full */
    assert_int_equal(c->writes, 0);
    size_t have = 0;
    for (int i = 0; i < 10000 && have < TOTAL; i++) {
        have += drain_peer(c->peer, (char *)got + have, TOTAL - have);
        turn(f);
    }
    assert_int_equal(have, TOTAL);
    assert_memory_equal(got, blob, TOTAL);
    assert_int_equal(c->writes, 1);
    free(blob);
    free(got);
}

/* An output of more pieces than one send takes (16): all of it goes out
 * without the peer doing anything. */
static void test_write_many_pieces(void **state)
{
    struct fixture *f = *state;
    static const char piece[] = "0123456789";
    struct conn *c = &f->c[0];
    struct evbuffer *out = bufferevent_get_output(c->bev);
    for (int i = 0; i < 50; i++) /* a chunk each */
        evbuffer_add_reference(out, piece, 10, NULL, NULL);
    for (int i = 0; i < 3; i++)
        turn(f);
    char got[1024];
    assert_int_equal(drain_peer(c->peer, got, sizeof got), 500);
    for (int i = 0; i < 50; i++)
        assert_memory_equal(got + i * 10, piece, 10);
    assert_int_equal(c->writes, 1);
}

/* Output added while the owner has writing off waits in the buffer and
 * goes out once writing is on again (a plain bufferevent_enable). */
static void test_write_while_writing_off(void **state)
{
    struct fixture *f = *state;
    struct conn *c = &f->c[0];
    char got[64];
    bufferevent_disable(c->bev, EV_WRITE);
    bufferevent_write(c->bev, "held", 4);
    turn(f);
    turn(f);
    assert_int_equal(drain_peer(c->peer, got, sizeof got), 0);
    bufferevent_enable(c->bev, EV_WRITE);
    for (int i = 0; i < 3; i++)
        turn(f);
    assert_int_equal(drain_peer(c->peer, got, sizeof got), 4);
    assert_memory_equal(got, "held", 4);
    assert_int_equal(c->writes, 1);
    /* ... and later writes go out at the end of their turn again. */
    bufferevent_write(c->bev, "next", 4);
    turn(f);
    assert_int_equal(drain_peer(c->peer, got, sizeof got), 4);
}

/* A write timeout (bufferevent_set_timeouts) reports output that makes no
 * progress, as libevent's write event would, and nothing while there is
 * nothing to write. */
static void test_write_timeout(void **state)
{
    struct fixture *f = *state;
    struct conn *c = &f->c[0];
    struct timeval tv = { 0, 100 * 1000 };
    bufferevent_set_timeouts(c->bev, NULL, &tv);
    for (int i = 0; i < 30; i++) { /* idle three times the timeout */
        usleep(10 * 1000);
        turn(f);
    }
    assert_int_equal(c->events, 0);
    enum { TOTAL = 4 << 20 };
    unsigned char *blob = pattern(TOTAL, 3);
    bufferevent_write(c->bev, blob, TOTAL); /* more than the socket holds; the peer never reads */
    free(blob);
    for (int i = 0; i < 300 && !c->events; i++) {
        usleep(10 * 1000);
        turn(f);
    }
    assert_int_equal(c->events, BEV_EVENT_WRITING | BEV_EVENT_TIMEOUT);
}

/* Everything the peer sent before the first turn, more than one read
 * takes, and nothing after: the read event is edge-triggered and reports
 * the socket once, so the rest must be read without another report. */
static void test_read_more_than_one_read_at_once(void **state)
{
    struct fixture *f = *state;
    struct conn *c = &f->c[0];
    int big = 1 << 20;
    setsockopt(c->peer, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    enum { CAP = 1 << 20 };
    unsigned char *blob = pattern(CAP, 11);
    size_t sent = 0;
    for (;;) {
        ssize_t n = send(c->peer, blob + sent, CAP - sent, MSG_DONTWAIT);
        if (n <= 0)
            break;
        sent += (size_t)n;
    }
    assert_true(sent > 64 * 1024); /* more than one read (READ_MAX) */
    for (int i = 0; i < 50 && evbuffer_get_length(c->got) < sent; i++)
        turn(f);
    assert_int_equal(evbuffer_get_length(c->got), sent);
    assert_memory_equal(evbuffer_pullup(c->got, -1), blob, sent);
    free(blob);
}

static void send_requests(struct fixture *f, int round)
{
    char req[64];
    for (int i = 0; i < NCONN; i++) {
        snprintf(req, sizeof req, "GET /%d/%d HTTP/1.1\r\n\r\n", round, i);
        write_all(f->c[i].peer, req, strlen(req));
    }
}

static bool all_read(struct fixture *f, unsigned reads)
{
    for (int i = 0; i < NCONN; i++)
        if (f->c[i].reads < reads)
            return false;
    return true;
}

/* Every connection's request arrives whole, however many are readable in
 * one turn. libevent's epoll asks for 32 events at first and doubles that
 * when they all come back: the first round grows it, the second is read in
 * one turn, more sockets than one io_uring batch takes. */
static void test_reads_from_many(void **state)
{
    struct fixture *f = *state;
    send_requests(f, 1);
    for (int i = 0; i < 10 && !all_read(f, 1); i++)
        turn(f);
    assert_true(all_read(f, 1));
    send_requests(f, 2);
    turn(f);
    assert_true(all_read(f, 2));
    char want[64];
    for (int i = 0; i < NCONN; i++) {
        int n = snprintf(want, sizeof want, "GET /1/%d HTTP/1.1\r\n\r\nGET /2/%d HTTP/1.1\r\n\r\n", i, i);
        assert_int_equal(evbuffer_get_length(f->c[i].got), (size_t)n);
        assert_memory_equal(evbuffer_pullup(f->c[i].got, -1), want, (size_t)n);
        assert_int_equal(f->c[i].reads, 2);
    }
}

/* A body larger than one read goes through whole and in order. */
static void test_large_read(void **state)
{
    struct fixture *f = *state;
    enum { TOTAL = 1 << 20 };
    unsigned char *blob = pattern(TOTAL, 7);
    size_t sent = 0;
    for (int guard = 0; evbuffer_get_length(f->c[0].got) < TOTAL && guard < 10000; guard++) {
        if (sent < TOTAL) {
            ssize_t n = send(f->c[0].peer, blob + sent, TOTAL - sent, MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
        }
        turn(f);
    }
    assert_int_equal(evbuffer_get_length(f->c[0].got), TOTAL);
    assert_memory_equal(evbuffer_pullup(f->c[0].got, -1), blob, TOTAL);
    assert_true(f->c[0].reads > 1);
    free(blob);
}

/* EOF from the peer reaches the event callback as EOF while reading. */
static void test_eof(void **state)
{
    struct fixture *f = *state;
    write_all(f->c[3].peer, "bye", 3);
    shutdown(f->c[3].peer, SHUT_WR);
    for (int i = 0; i < 3; i++)
        turn(f);
    assert_int_equal(evbuffer_get_length(f->c[3].got), 3);
    assert_int_equal(f->c[3].events, BEV_EVENT_EOF | BEV_EVENT_READING);
    assert_int_equal(f->c[4].events, 0);
}

static void keep_input(struct bufferevent *bev, void *arg)
{
    (void)bev;
    struct conn *c = arg;
    c->reads++;
}

/* The read high watermark bounds the input; reading resumes when the
 * owner drains it. With sg_io_read_high, the read event is off epoll while
 * the input is full (it would report the socket every turn), also after
 * the owner turned reading off and on again meanwhile. */
static void high_watermark(struct fixture *f, bool ours)
{
    enum { HIGH = 1000, TOTAL = 10000 };
    struct conn *c = &f->c[0];
    bufferevent_setcb(c->bev, keep_input, wcb, ecb, c);
    if (ours)
        sg_io_read_high(c->bev, HIGH);
    else
        bufferevent_setwatermark(c->bev, EV_READ, 0, HIGH);
    char blob[TOTAL];
    memset(blob, 'x', sizeof blob);
    write_all(c->peer, blob, sizeof blob);
    size_t taken = 0;
    for (int i = 0; i < 200 && taken < TOTAL; i++) {
        turn(f);
        struct evbuffer *in = bufferevent_get_input(c->bev);
        assert_true(evbuffer_get_length(in) <= HIGH);
        if (ours && evbuffer_get_length(in) == HIGH && taken + HIGH < TOTAL) {
            turn(f); /* the socket has more: this turn finds the input full */
            assert_false(event_pending(&c->bev->ev_read, EV_READ, NULL));
            if (i % 2) {
                bufferevent_disable(c->bev, EV_READ);
                bufferevent_enable(c->bev, EV_READ);
                turn(f);
                assert_false(event_pending(&c->bev->ev_read, EV_READ, NULL));
            }
        }
        if (i % 3 == 2) { /* the owner drains now and then */
            taken += evbuffer_get_length(in);
            evbuffer_drain(in, evbuffer_get_length(in));
            if (ours)
                assert_true(event_pending(&c->bev->ev_read, EV_READ, NULL));
        }
    }
    assert_int_equal(taken, TOTAL);
}

static void test_high_watermark(void **state)
{
    high_watermark(*state, true);
}

/* The same set with libevent's own call (its callback resumes reading). */
static void test_high_watermark_libevent(void **state)
{
    high_watermark(*state, false);
}

static void pause_other(struct conn *c)
{
    bufferevent_disable(c->other->bev, EV_READ);
}

/* An owner that stops another connection's reading in its read callback
 * (backpressure), in a turn where both are readable: whatever was already
 * taken from the other's socket is delivered, nothing is lost or doubled
 * once its reading resumes. */
static void test_reading_stopped_by_another(void **state)
{
    struct fixture *f = *state;
    struct conn *a = &f->c[0], *b = &f->c[1];
    a->other = b;
    a->on_read = pause_other;
    write_all(b->peer, "b-part-1;", 9);
    write_all(a->peer, "a", 1);
    turn(f);
    write_all(b->peer, "b-part-2;", 9);
    turn(f);
    bufferevent_enable(b->bev, EV_READ);
    for (int i = 0; i < 3; i++)
        turn(f);
    /* What sat in the input while paused is the owner's to look at. */
    evbuffer_add_buffer(b->got, bufferevent_get_input(b->bev));
    assert_int_equal(evbuffer_get_length(b->got), 18);
    assert_memory_equal(evbuffer_pullup(b->got, -1), "b-part-1;b-part-2;", 18);
}

static void free_other(struct conn *c)
{
    if (c->other->bev) {
        bufferevent_free(c->other->bev);
        c->other->bev = NULL;
    }
}

/* An owner that frees another connection in its read callback, in a turn
 * where both are readable: the freed one's callbacks are never called
 * again (and the sanitizer build sees no use after free). */
static void test_freed_by_another(void **state)
{
    struct fixture *f = *state;
    struct conn *a = &f->c[0], *b = &f->c[1];
    a->other = b;
    a->on_read = free_other;
    b->other = a;
    b->on_read = free_other;
    write_all(a->peer, "a", 1);
    write_all(b->peer, "b", 1);
    turn(f);
    turn(f);
    assert_int_equal(a->reads + b->reads, 1);
    assert_true((a->bev == NULL) != (b->bev == NULL));
}

/* A read callback with a parser (sg_io_direct): registered once, for
 * this function only; the other connections keep rcb. */
static void rcb_direct(struct bufferevent *bev, void *arg)
{
    rcb(bev, arg);
}

static size_t direct(struct bufferevent *bev, const char *p, size_t n, void *arg)
{
    struct conn *c = arg;
    size_t take = c->direct_take < n ? c->direct_take : n;
    c->directs++;
    evbuffer_add(c->direct_got, p, take);
    if (c->direct_unhook)
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    return take;
}

static void expect(struct evbuffer *b, const char *want)
{
    assert_int_equal(evbuffer_get_length(b), strlen(want));
    assert_memory_equal(evbuffer_pullup(b, -1), want, strlen(want));
}

/* A read into an empty input goes to the parser first; what it leaves
 * goes into the input and to the read callback, which is not called when
 * the parser took everything. Into an input that holds bytes already, the
 * read goes the usual way (the parser would see them out of order). */
static void test_direct_parser(void **state)
{
    struct fixture *f = *state;
    sg_io_direct(rcb_direct, direct);
    struct conn *all = &f->c[0], *part = &f->c[1], *held = &f->c[2], *gone = &f->c[3];
    for (int i = 0; i < 4; i++) {
        f->c[i].direct_got = evbuffer_new();
        bufferevent_setcb(f->c[i].bev, rcb_direct, wcb, ecb, &f->c[i]);
    }
    all->direct_take = SIZE_MAX;
    part->direct_take = 3;
    held->direct_take = SIZE_MAX;
    gone->direct_take = 2;
    gone->direct_unhook = true;
    struct evbuffer *held_in = bufferevent_get_input(held->bev);
    evbuffer_unfreeze(held_in, 0); /* a socket bufferevent's input takes adds from libevent only */
    assert_int_equal(evbuffer_add(held_in, "old;", 4), 0);
    evbuffer_freeze(held_in, 0);
    write_all(all->peer, "whole", 5);
    write_all(part->peer, "headbody", 8);
    write_all(held->peer, "new", 3);
    write_all(gone->peer, "ab-rest", 7);
    turn(f);
    turn(f);
    expect(all->direct_got, "whole");
    assert_int_equal(all->reads, 0);
    expect(part->direct_got, "hea");
    expect(part->got, "dbody");
    assert_int_equal(part->reads, 1);
    assert_int_equal(held->directs, 0);
    expect(held->got, "old;new");
    expect(gone->direct_got, "ab");
    assert_int_equal(gone->reads, 0); /* its callbacks were gone */
    expect(bufferevent_get_input(gone->bev), "-rest");
    /* The next read of a connection whose input is empty again: the parser. */
    write_all(held->peer, "next", 4);
    turn(f);
    turn(f);
    expect(held->direct_got, "next");
    for (int i = 0; i < 4; i++)
        evbuffer_free(f->c[i].direct_got);
}

/* The probe and a worker's own ring agree. */
static void test_probe(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    int err = -1, probe = sg_io_uring_probe();
    int on = sg_io_thread_enter(base, true, &err);
    assert_int_equal(on, probe == 0 ? 1 : 0);
    assert_int_equal(err, probe);
    sg_io_thread_leave();
    on = sg_io_thread_enter(base, false, &err);
    assert_int_equal(on, 0);
    assert_int_equal(err, 0);
    sg_io_thread_leave();
    event_base_free(base);
}

#define BOTH(t) cmocka_unit_test_setup_teardown(t, setup_uring, teardown), \
                cmocka_unit_test_setup_teardown(t, setup_plain, teardown)

int main(void)
{
    /* As strangler's main does: libevent's own writes do not pass
     * MSG_NOSIGNAL. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        BOTH(test_writes_go_out_in_one_turn),
        BOTH(test_written_twice_in_a_turn),
        BOTH(test_write_callback_writes_again),
        BOTH(test_write_to_a_closed_peer),
        BOTH(test_write_larger_than_the_socket),
        BOTH(test_write_many_pieces),
        BOTH(test_write_while_writing_off),
        BOTH(test_write_timeout),
        BOTH(test_read_more_than_one_read_at_once),
        BOTH(test_reads_from_many),
        BOTH(test_large_read),
        BOTH(test_eof),
        BOTH(test_high_watermark),
        BOTH(test_high_watermark_libevent),
        BOTH(test_reading_stopped_by_another),
        BOTH(test_freed_by_another),
        BOTH(test_direct_parser),
        cmocka_unit_test(test_probe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
