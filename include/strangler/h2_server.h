/* HTTP/2 client connections (the downstream side), RFC 9113, on nghttp2.
 *
 * For now: h2c with prior knowledge on plaintext listeners. The HTTP/1.1
 * server looks at the first bytes of every new connection; a client that
 * starts with the connection preface is handed over here. */
#ifndef STRANGLER_H2_SERVER_H
#define STRANGLER_H2_SERVER_H

struct bufferevent;
struct sg_listener_rt;
struct sg_worker;

/* The client connection preface (RFC 9113 3.4). */
#define SG_H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define SG_H2_PREFACE_LEN 24

/* Takes over an accepted client connection whose input buffer starts with
 * the preface (left in it: nghttp2 checks it). The connection stays
 * counted (listener gauge, worker and process connection counts) until
 * the HTTP/2 session closes, as it was for the HTTP/1.1 side. On failure
 * the connection is closed and uncounted here. */
void sg_h2s_takeover(struct sg_listener_rt *l, struct bufferevent *bev, const char *client_addr);

/* Lets io.c hand a read's bytes to nghttp2 before they reach the input
 * buffer (sg_io_direct). Once, before the workers start. */
void sg_h2s_io_register(void);

/* Draining (SIGTERM): every session gets a graceful GOAWAY (RFC 9113 6.8:
 * a notice first, the final last-stream-id one round trip later); streams
 * already opened finish, then the connection closes. */
void sg_h2s_drain_all(struct sg_worker *w);

/* Closes every session at once (end of drain_timeout, worker exit). */
void sg_h2s_close_all(struct sg_worker *w);

/* Frees the calling thread's cache of HTTP/2 header blocks (worker exit). */
void sg_h2_thread_exit(void);

#endif
