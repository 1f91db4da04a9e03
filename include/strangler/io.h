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
 * the code that added it). When everything is written, the write interest
 * the bufferevent asked for is withdrawn before the changelist reaches
 * epoll, so no epoll_ctl happens; the owner's write callback runs as
 * libevent would run it. A short write or an error leaves the bufferevent
 * as it was: libevent's own write event takes over (and reports errors).
 *
 * Reads: libevent 2.1 sizes every socket read with ioctl(FIONREAD) and caps
 * it at 4 KiB. sg_io_autoflush() also points the bufferevent's read event
 * at a callback that reads up to 64 KiB at once (into a per-thread buffer,
 * then one add to the input) with libevent's semantics: high watermark,
 * EOF and errors to the event callback, read callback past the low
 * watermark. Both directions use the socket calls (recv, send, sendmsg),
 * which skip the file layer that read/writev cross on every call. One
 * keep-alive request through the proxy is then epoll_wait, recv and send on
 * each side: as many system calls as nginx and HAProxy make.
 *
 * Never for TLS bufferevents (the bytes are ciphertext there), never before
 * a connect completed (the pending write event is the connect's). */
#ifndef STRANGLER_IO_H
#define STRANGLER_IO_H

struct bufferevent;
struct event_base;

/* Per worker thread, before its loop runs / after it ended. */
int sg_io_thread_enter(struct event_base *base);
void sg_io_thread_leave(void);

/* Connected plaintext socket bufferevent of this thread's base. A no-op on a
 * thread that did not enter. */
void sg_io_autoflush(struct bufferevent *bev);

/* bufferevent_enable() for the events not enabled yet: libevent re-adds an
 * event that is already on (an event_add each time), which a connection
 * reused from the pool paid on every request. For bufferevents without
 * timeouts set (re-adding would restart those). */
void sg_io_enable(struct bufferevent *bev, short what);

#endif
