/* Write-through and direct reads for plaintext socket bufferevents.
 *
 * A bufferevent writes only when epoll reports its socket writable: every
 * response costs an epoll_ctl to add write interest, a loop turn to learn
 * what is almost always true (the socket has room), the write, and another
 * epoll_ctl to drop the interest. nginx and HAProxy write at once and wait
 * for EPOLLOUT only when the kernel's buffer is full.
 *
 * sg_io_autoflush() gives a connected plaintext bufferevent that behaviour:
 * whatever is added to its output during a loop turn is written at the end
 * of that turn's callbacks, from the worker's own event (never from inside
 * the code that added it); the owner's write callback runs as libevent
 * would run it, and errors go to its event callback. The bufferevent's
 * write event stays added while the owner wants writing (so adds to the
 * output do not add it, nor do writes delete it) but waits on no
 * descriptor while the socket takes what is written; a short write points
 * it at the socket until the rest is out.
 *
 * Reads: libevent 2.1 sizes every socket read with ioctl(FIONREAD) and caps
 * it at 4 KiB. sg_io_autoflush() also points the bufferevent's read event
 * at a callback that reads up to 64 KiB at once (into a per-thread buffer,
 * then one add to the input, or first to the owner's parser:
 * sg_io_direct) with libevent's semantics: high watermark,
 * EOF and errors to the event callback, read callback past the low
 * watermark. Both directions use the socket calls (recv, send, sendmsg),
 * which skip the file layer that read/writev cross on every call. One
 * keep-alive request through the proxy is then epoll_wait, recv and send on
 * each side: as many system calls as nginx and HAProxy make.
 *
 * io_uring (`io_uring: auto`, where the kernel allows it): the same reads
 * and writes, gathered over the loop turn and handed to the kernel in one
 * io_uring_enter each: every socket epoll reported readable in the turn is
 * read in one call, then everything the owners wrote is sent in one call.
 * Each operation carries MSG_DONTWAIT, so the kernel completes it during
 * the call (-EAGAIN where it would block) and nothing is in flight once the
 * call returns: buffers and bufferevents need to live only for the call,
 * and a short write waits for the write event as above. A
 * turn's system calls are then epoll_wait and two io_uring_enter, however
 * many connections it serves. Where a system call is dear (a virtual
 * machine that switches page tables on every entry), this is what puts
 * strangler's CPU per request below nginx's.
 *
 * Never for TLS bufferevents (the bytes are ciphertext there), never before
 * a connect completed (the pending write event is the connect's). */
#ifndef STRANGLER_IO_H
#define STRANGLER_IO_H

#include <stdbool.h>
#include <stddef.h>

struct bufferevent;
struct event_base;

/* Per worker thread, before its loop runs / after it ended. With `uring`,
 * tries io_uring first; returns 1 when it is on, 0 for plain system calls
 * (*uring_error: why io_uring is not, an errno value, or 0), -1 when out of
 * memory (nothing on). */
int sg_io_thread_enter(struct event_base *base, bool uring, int *uring_error);
void sg_io_thread_leave(void);

/* 0 when this thread could set up the ring the workers use, else the errno
 * value that refuses it (ENOSYS: an old kernel; EPERM: a seccomp profile
 * or kernel.io_uring_disabled; EOPNOTSUPP: a kernel that would not answer
 * a non-blocking send or receive at once). */
int sg_io_uring_probe(void);

/* Connected plaintext socket bufferevent of this thread's base. A no-op on a
 * thread that did not enter. False when out of memory: the bufferevent
 * cannot write any more and is to be freed. */
bool sg_io_autoflush(struct bufferevent *bev);

/* bufferevent_setwatermark(bev, EV_READ, 0, high): reading stops while the
 * input holds `high` bytes and resumes once the owner drained it below. On
 * a bufferevent sg_io_autoflush() took, without libevent's watermark
 * callback (which runs on every add to and every drain of the input). */
void sg_io_read_high(struct bufferevent *bev, size_t high);

/* bufferevent_enable() for the events not enabled yet: libevent re-adds an
 * event that is already on (an event_add each time), which a connection
 * reused from the pool paid on every request. For bufferevents without
 * timeouts set (re-adding would restart those). */
void sg_io_enable(struct bufferevent *bev, short what);

/* A read callback's parser, handed the bytes of a read before they are
 * added to the input buffer: when the input is empty, a bufferevent that
 * sg_io_autoflush() took and whose read callback is `readcb` has its
 * bytes given to `direct` (with the callback's argument) instead. It
 * returns how many of them it consumed, having done with those what the
 * read callback would have done; the rest go into the input and the read
 * callback runs as before (after `direct` returned, so what it left is
 * still there for it). A request or a response that arrives in one read
 * is then parsed where it was read: no buffer chain allocated, filled,
 * peeked at and freed for it. `direct` must leave alone what it cannot
 * take (returning 0 is always right) and may consume everything only when
 * the read callback would find nothing left to do. At most 4
 * registrations, made before any worker runs. */
typedef size_t (*sg_io_direct_fn)(struct bufferevent *bev, const char *p, size_t n, void *arg);
void sg_io_direct(void (*readcb)(struct bufferevent *bev, void *arg), sg_io_direct_fn direct);

#endif
