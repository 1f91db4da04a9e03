/* One deadline per connection, kept on a libevent timer lazily, as nginx
 * and HAProxy keep their timers.
 *
 * A busy keep-alive connection sets and clears its deadline several times
 * per request (header timeout, none, park delay or idle timeout), and each
 * event_add/event_del with a timeout is work on libevent's timer heap.
 * Here a pending timer that fires no later than a new deadline is left
 * alone and re-armed for the rest when it fires early; clearing only
 * forgets the deadline. The timer is added only when it would fire too
 * late or is not pending. The behaviour at a deadline is unchanged. */
#ifndef STRANGLER_DEADLINE_H
#define STRANGLER_DEADLINE_H

#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#include "strangler/clock.h"

struct sg_deadline {
    uint64_t due_ms; /* sg_mono_ms() when the work is due; 0: none */
    uint64_t fires_ms; /* when the pending timer fires; at or before due_ms */
};

/* Sets the deadline ms from now on timer ev (a non-persistent timer
 * event), or clears it (ms == 0). */
static inline void sg_deadline_set(struct sg_deadline *d, struct event *ev, uint64_t ms)
{
    if (ms == 0) {
        d->due_ms = 0;
        return;
    }
    d->due_ms = sg_mono_ms() + ms;
    if (event_pending(ev, EV_TIMEOUT, NULL) && d->fires_ms <= d->due_ms)
        return;
    struct timeval tv = sg_tv_ms(ms);
    event_add(ev, &tv);
    d->fires_ms = d->due_ms;
}

/* First thing in ev's callback: true when the deadline is due (it is then
 * cleared); false when it was cleared or moved later meanwhile (the timer
 * is then re-armed for the rest) and the callback has nothing to do. */
static inline bool sg_deadline_due(struct sg_deadline *d, struct event *ev)
{
    if (d->due_ms == 0)
        return false;
    uint64_t now = sg_mono_ms();
    if (now < d->due_ms) {
        struct timeval tv = sg_tv_ms(d->due_ms - now);
        event_add(ev, &tv);
        d->fires_ms = d->due_ms;
        return false;
    }
    d->due_ms = 0;
    return true;
}

#endif
