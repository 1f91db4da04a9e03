/* Fuzz target: the configuration loader, YAML bytes -> snapshot -> freed.
 *
 * sg_config_load_buffer() parses with libyaml, substitutes ${ENV},
 * validates and compiles (regexes, weights, mirror thresholds); a snapshot
 * or the collected errors must come back, and everything must be freed
 * (LeakSanitizer checks under ASan). */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "strangler/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sg_config_errors errs = { 0 };
    struct sg_config *cfg = sg_config_load_buffer("fuzz.yaml", (const char *)data, size, &errs);
    /* Either a snapshot, or at least one error saying why not. */
    FUZZ_ASSERT(cfg ? errs.n == 0 : errs.n > 0);
    for (size_t i = 0; i < errs.n; i++)
        FUZZ_ASSERT(errs.msgs[i] && errs.msgs[i][0]);
    if (cfg)
        sg_config_unref(cfg);
    sg_config_errors_free(&errs);
    return 0;
}
