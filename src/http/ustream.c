#include "strangler/ustream.h"

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
