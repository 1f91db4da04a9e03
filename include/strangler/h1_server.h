/* HTTP/1.1 client connections (the downstream side). */
#ifndef STRANGLER_H1_SERVER_H
#define STRANGLER_H1_SERVER_H

#include <sys/socket.h>

struct bufferevent;
struct sg_listener_rt;
struct sg_worker;
struct sg_h1s;

/* Takes ownership of an accepted socket. */
void sg_h1s_accept(struct sg_listener_rt *l, int fd, const struct sockaddr *peer, int peerlen);
/* Lets io.c hand a read's bytes to the request parser before they reach
 * the input buffer (sg_io_direct). Once, before the workers start. */
void sg_h1s_io_register(void);
/* Draining: close idle connections now, busy ones after their response. */
void sg_h1s_drain_all(struct sg_worker *w);
/* Closes every connection at once (end of drain_timeout). */
void sg_h1s_close_all(struct sg_worker *w);

/* Splices two bufferevents until either side closes (websocket). */
void sg_tunnel_start(struct sg_worker *w, struct bufferevent *a, struct bufferevent *b);

#endif
