#include "strangler/ustream.h"

enum sg_acquire_result sg_ustream_acquire(const struct sg_ustream *u, struct sg_pool *p, struct sg_acquire *a,
                                          bool fresh, struct sg_ustream_conn *got, const char **err)
{
    *got = (struct sg_ustream_conn){ NULL, NULL };
    return u->h2 ? sg_h2c_acquire(p, a, &got->sess, err) : sg_pool_acquire(p, a, fresh, &got->uc, err);
}

struct sg_ustream_conn sg_ustream_arrived(struct sg_acquire *a, struct sg_uconn *uc)
{
    struct sg_ustream_conn got = { uc, a->session };
    a->session = NULL;
    return got;
}

void sg_ustream_body(struct sg_ustream *u, const char *p, size_t n)
{
    if (u->h2)
        sg_h2c_body(&u->h2s, p, n);
    else
        sg_h1c_body(&u->h1c, p, n);
}

void sg_ustream_end(struct sg_ustream *u, const struct sg_headers *trailers)
{
    if (u->h2)
        sg_h2c_end(&u->h2s, trailers);
    else
        sg_h1c_end(&u->h1c, trailers);
}

bool sg_ustream_congested(const struct sg_ustream *u)
{
    return u->h2 ? sg_h2c_congested(&u->h2s) : sg_h1c_congested(&u->h1c);
}

void sg_ustream_pause(struct sg_ustream *u, bool pause)
{
    if (u->h2)
        sg_h2c_pause(&u->h2s, pause);
    else
        sg_h1c_pause(&u->h1c, pause);
}

void sg_ustream_detach(struct sg_ustream *u)
{
    if (u->h2)
        sg_h2c_detach(&u->h2s);
    else
        sg_h1c_detach(&u->h1c, false);
}

void sg_ustream_free(struct sg_ustream *u)
{
    sg_h1c_free(&u->h1c);
    sg_h2c_free(&u->h2s);
}
