#include "strangler/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LISTEN_BACKLOG 4096

void sg_sockname(int fd, char *out, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
            snprintf(out, len, "[%s]:%u", host, port);
            return;
        }
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof host);
        port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    snprintf(out, len, "%s:%u", host, port);
}

static int bind_one(const struct addrinfo *ai, char *errbuf, size_t errlen)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        snprintf(errbuf, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (ai->ai_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        snprintf(errbuf, errlen, "bind/listen: %s", strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int sg_listen_bind(const struct sg_hostport *addr, size_t n_workers, int *fds, char *bound, size_t bound_len,
                   char *errbuf, size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char port[8];
    snprintf(port, sizeof port, "%u", addr->port);
    int rc = getaddrinfo(addr->host[0] ? addr->host : NULL, port, &hints, &res);
    if (rc != 0) {
        snprintf(errbuf, errlen, "cannot resolve %s: %s", addr->host, gai_strerror(rc));
        return -1;
    }
    size_t done = 0;
    for (; done < n_workers; done++) {
        if ((fds[done] = bind_one(res, errbuf, errlen)) < 0)
            break;
        if (done == 0) { /* later sockets take the port the first one got */
            sg_sockname(fds[0], bound, bound_len);
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            getsockname(fds[0], (struct sockaddr *)&ss, &sl);
            memcpy(res->ai_addr, &ss, res->ai_addrlen);
        }
    }
    freeaddrinfo(res);
    if (done == n_workers)
        return 0;
    while (done > 0)
        close(fds[--done]);
    return -1;
}
