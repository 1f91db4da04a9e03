#ifndef STRANGLER_CLOCK_H
#define STRANGLER_CLOCK_H

#include <stdint.h>
#include <sys/time.h>
#include <time.h>

static inline uint64_t sg_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Milliseconds for deadlines, timeouts and rate windows: the coarse clock,
 * which is the monotonic clock as of the last timer tick (1-10 ms old,
 * 4 ms on a HZ=250 kernel). Reading it costs a few nanoseconds; a precise
 * read costs tens of them and more inside a virtual machine (kvm-clock),
 * and a proxied request sets four deadlines. A deadline set with it is
 * due up to one tick early and, as a timer that fires before the coarse
 * clock reaches it waits for the rest, at most one tick late. Durations
 * that are reported (request and shadow times) use sg_mono_us. */
static inline uint64_t sg_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static inline uint64_t sg_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static inline struct timeval sg_tv_ms(uint64_t ms)
{
    struct timeval tv = { (time_t)(ms / 1000u), (suseconds_t)((ms % 1000u) * 1000u) };
    return tv;
}

#endif
