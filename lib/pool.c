/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/pool.c - what the Redis and MySQL pools share: their statistics.
 *
 * vl_pool_stats grows at its end like the options structs (lib/internal.h):
 * a program built against an older header passes the smaller struct it
 * knows, and only the whole fields within it are written.
 */
#include "internal.h"

static const size_t stats_ends[] = {
    VL__END(vl_pool_stats, struct_size),
    VL__END(vl_pool_stats, open),
    VL__END(vl_pool_stats, ready),
    VL__END(vl_pool_stats, busy),
    VL__END(vl_pool_stats, idle),
    VL__END(vl_pool_stats, leased),
    VL__END(vl_pool_stats, pending),
    VL__END(vl_pool_stats, waiters),
    VL__END(vl_pool_stats, requests),
    VL__END(vl_pool_stats, errors),
    VL__END(vl_pool_stats, rejected),
    VL__END(vl_pool_stats, timeouts),
    VL__END(vl_pool_stats, wait_count),
    VL__END(vl_pool_stats, wait_total_ms),
    VL__END(vl_pool_stats, connects),
    VL__END(vl_pool_stats, reconnects),
    VL__END(vl_pool_stats, connect_failures),
    VL__END(vl_pool_stats, closed_idle),
    VL__END(vl_pool_stats, closed_lifetime),
    VL__END(vl_pool_stats, closed_dirty),
    VL__END(vl_pool_stats, closed_broken),
    VL__END(vl_pool_stats, keepalives),
};
/* No padding at the end: a field appended later must start past the end of
 * every older struct. */
_Static_assert(sizeof(vl_pool_stats) == VL__END(vl_pool_stats, keepalives),
               "vl_pool_stats ends with padding");
static const vl__opts_desc stats_desc = {"vl_pool_stats", sizeof(vl_pool_stats), stats_ends,
                                         sizeof(stats_ends) / sizeof(stats_ends[0])};

void vl_pool_stats_init_sized(vl_pool_stats *s, size_t struct_size)
{
    vl_pool_stats zero;

    memset(&zero, 0, sizeof(zero));
    vl__opts_init(s, struct_size, &zero, &stats_desc);
}

int vl__pool_stats_out(vl_pool_stats *out, const vl_pool_stats *full)
{
    size_t size = out->struct_size;
    char why[128];

    if (vl__opts_check(out, &stats_desc, why, sizeof(why)) != VL_OK)
        return VL_EINVAL;
    memcpy((char *)out + sizeof(size_t), (const char *)full + sizeof(size_t),
           vl__opts_prefix(&stats_desc, size) - sizeof(size_t));
    return VL_OK;
}
