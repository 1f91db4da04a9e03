/* Active health checks (upstreams' `health_check`), run on the main
 * thread's event base: each endpoint is probed once per interval per
 * process, not once per worker. Results go to the endpoint's shared state
 * (health.h), which the workers read when they pick an endpoint.
 *
 * A probe is one GET of health_check.path on a new connection, in the
 * upstream's protocol (HTTP/1.1 with `Connection: close`; HTTP/2 with
 * prior knowledge for h2c, over TLS with ALPN h2 for h2), with the
 * upstream's TLS settings. A 2xx final status within `timeout` is a
 * success; anything else (other status, refused, reset, TLS failure,
 * timeout, name not resolving) is a failure. The next probe starts
 * `interval` after the previous one ended, so probes of one endpoint never
 * overlap. Names are resolved here with the prober's own evdns base, and
 * re-resolved after the upstream's dns_refresh. */
#ifndef STRANGLER_PROBER_H
#define STRANGLER_PROBER_H

#include "strangler/config.h"

struct event_base;
struct sg_metrics_shard;
struct sg_prober;

struct sg_prober *sg_prober_new(struct event_base *base, struct sg_metrics_shard *shard);
/* Adopts a configuration (at start and after every reload): starts probes
 * for new endpoints, keeps the state of the ones that stay, stops the ones
 * that went away, and forgets health state the configuration no longer
 * asks for (sg_endpoints_reconcile). Holds a reference to cfg. */
void sg_prober_update(struct sg_prober *pr, struct sg_config *cfg);
void sg_prober_free(struct sg_prober *pr);

#endif
