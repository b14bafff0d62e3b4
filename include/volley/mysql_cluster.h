/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/mysql_cluster.h - one handle over a MySQL/MariaDB primary and its
 * replicas, or over a Galera cluster: reads go where they should, and
 * failures route around.
 *
 * A cluster is a set of hosts, one vl_mysql_pool per host (volley/mysql.h),
 * and a health check per host on a timer. Writes, transactions and every
 * statement not marked as a read go to the primary; reads
 * (vl_mysql_cluster_read, vl_mysql_cluster_read_execute) go to the healthy
 * replica with the fewest requests outstanding.
 *
 * ---- Hosts ---------------------------------------------------------------
 *
 *   mysql://user:pw@primary:3306,replica1:3307,replica2:3308/db?param=value
 *
 * Every host gets the same user, password, database and parameters. The
 * first `primaries` hosts (option or ?primaries=N, default 1) are the
 * primary candidates, in order; every host is also a replica for reads
 * while it is not the primary. vl_mysql_cluster_new_hosts takes explicit
 * arrays of URLs instead (each with its own credentials and parameters).
 * These URL parameters belong to the cluster and are not passed on:
 *   primaries=N          the first N hosts are primary candidates
 *   galera=0|1           the hosts are one Galera cluster (below)
 *   max_lag_ms=N         as the option of that name
 *   read_your_writes=0|1 as the option of that name
 * Any other parameter is each connection's (volley/mysql.h). A malformed
 * URL, an empty host ("a:1,,b:2"), more than 64 hosts or a parameter a
 * connection refuses gives a cluster whose every future fails with
 * VL_EINVAL and a message saying why (rule 1 below).
 *
 * ---- Health ----------------------------------------------------------------
 *
 * Each host is checked every check_interval_ms on a connection of its own
 * (not one of its pool's), bounded by check_timeout_ms (connect and reply):
 *   - primary/replica: SELECT @@read_only and SHOW SLAVE STATUS
 *     (Slave_IO_Running, Slave_SQL_Running, Seconds_Behind_Master);
 *   - Galera: SHOW STATUS LIKE 'wsrep%' (wsrep_ready, wsrep_local_state,
 *     wsrep_cluster_status) and SELECT @@read_only.
 * The primary is the current one while it answers and is writable;
 * otherwise the first candidate, in order, whose last check succeeded with
 * @@read_only = 0. None is chosen before every host's first check ended
 * (answered, failed or timed out): requests made before then wait for
 * that first round. It is sticky: a former primary that comes back does not
 * take over again while the present one stays writable. With no writable
 * candidate, writes fail at once with VL_ECONN ("no writable primary"), or
 * wait up to primary_wait_ms for one (then VL_ETIMEDOUT).
 *
 * A replica is skipped for reads (state LAGGING) while its SQL thread is
 * stopped, while Seconds_Behind_Master exceeds max_lag_ms, or while its IO
 * thread is not running (the lag is then unknown). One exception: when no
 * primary is reachable either, a replica whose IO thread is down but whose
 * SQL thread runs still serves reads, as its data is the freshest there is.
 * With no healthy replica reads go to the primary, unless read_fallback is
 * 0 or the read says VL_MYSQL_READ_NO_PRIMARY: they then fail with
 * VL_ECONN ("no healthy replica").
 *
 * Circuit breaker, per host: breaker_failures consecutive transport
 * failures (a failed check, a statement failing with VL_ECONN or
 * VL_ECLOSED) open it. An open host gets no requests and no checks; the
 * requests it still holds are taken back (reads go to another host, writes
 * fail with VL_ECONN: their outcome is unknown). After breaker_open_ms it
 * is half-open: exactly one check, the probe, decides. Success closes it;
 * failure opens it for another breaker_open_ms. A host is never removed.
 * A statement failing with VL_ECONN also starts a check of its host at once
 * (at most one check per host is ever in flight), so a dead primary is
 * noticed within one round trip rather than one interval. A failed check
 * that lost or could not make its connection also takes back the host's
 * outstanding requests; one that timed out does not.
 *
 * A read that fails with VL_ECONN or VL_ECLOSED is tried again on another
 * host (each host once at most). Nothing else is retried: a write's
 * failure is the caller's to judge.
 *
 * ---- Read-your-writes --------------------------------------------------------
 *
 * The cluster remembers the GTIDs its writes produced (vl_mysql_result_gtid
 * of each write's result, and of COMMIT for a transaction ended with
 * vl_mysql_cluster_commit), the highest sequence number per replication
 * domain. A read with VL_MYSQL_READ_FRESH, or any read when the option
 * read_your_writes is on (unless it says VL_MYSQL_READ_STALE), first runs
 * SELECT MASTER_GTID_WAIT(?, ?) on the chosen replica, the position and
 * gtid_wait_ms bound as parameters. If the replica catches up in time (0)
 * the read runs there; on timeout (-1) or an error the read moves to
 * another replica, and then to the primary (always fresh; read_fallback
 * does not apply here). Galera has no GTID wait: a fresh read goes to the
 * writer, which has every write (the other nodes may still be applying
 * what it certified), and to the other synced nodes only if it is gone.
 *
 * ---- Galera ----------------------------------------------------------------
 *
 * With galera set, a node is healthy when wsrep_ready is ON,
 * wsrep_local_state is 4 (Synced) and wsrep_cluster_status is Primary.
 * Writes and transactions go to one node at a time, the writer, to avoid
 * certification conflicts: the present writer while it stays healthy,
 * otherwise the first healthy node in order. Reads spread over every
 * healthy node, the writer included. A node that stops being healthy (it
 * left the primary component, is donating, wsrep_ready OFF) is drained: it
 * gets no new requests, and the ones it holds finish there.
 *
 * ---- Lifecycle rules -------------------------------------------------------
 *
 *  1. Every call that returns a future returns NULL only when out of memory
 *     or when the cluster is NULL. Every other failure, a bad URL included,
 *     arrives through the future (volley/future.h, rule 1).
 *  2. Every future completes exactly once, from the loop, never inside the
 *     call that made it, whatever the hosts do: killed, hung, lagging,
 *     read-only, demoted or drained.
 *  3. Values are those of volley/mysql.h: a vl_mysql_result (borrowed in the
 *     callback, kept with vl_future_take), or a vl_mysql_tx for
 *     vl_mysql_cluster_begin. A failed statement's server error stays
 *     readable (vl_future_mysql_errno); messages name the host.
 *  4. vl_mysql_cluster_free completes every pending future of the cluster
 *     with VL_ECANCELED (requests waiting, running, in a GTID wait, ready
 *     and refresh futures), closes every pool and check connection, and
 *     makes open transactions dead (their calls fail with VL_ECLOSED; the
 *     caller still frees them). vl_loop_free frees a cluster still open.
 *  5. Freeing the cluster, or cancelling a future, from inside any callback
 *     is legal. Cancelling a request still waiting removes it; one running
 *     is cancelled as a pool request is (its connection is closed).
 *  6. The loop-alive rule of volley/loop.h: the check timers never keep
 *     vl_loop_run running. A request, a ready or a refresh future that is
 *     pending does, and so does a check already in flight (at most
 *     2 * check_timeout_ms: connect, then reply).
 *  7. Everything belongs to the loop's thread.
 */
#ifndef VOLLEY_MYSQL_CLUSTER_H
#define VOLLEY_MYSQL_CLUSTER_H

#include "common.h"
#include "future.h"
#include "loop.h"
#include "mysql.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_mysql_cluster vl_mysql_cluster;

/* The most hosts a cluster may have. */
#define VL_MYSQL_CLUSTER_MAX_HOSTS 64

/* Options. The ABI rule of vl_mysql_options applies: start from
 * vl_mysql_cluster_options_init(&o); fields are only ever appended. Times
 * are milliseconds, 0 = off unless said otherwise. */
typedef struct vl_mysql_cluster_options {
    size_t struct_size;                /* set by vl_mysql_cluster_options_init */
    const vl_mysql_pool_options *pool; /* every host's pool; NULL = defaults.
                                        * Read during vl_mysql_cluster_new only */
    uint64_t check_interval_ms;        /* between a host's checks; 1000 (0 = 1000) */
    uint64_t check_timeout_ms;         /* a check's connect, and its reply; 2000 */
    uint64_t max_lag_ms;               /* replica lag allowed; 5000; 0 = lag not
                                        * judged (a stopped SQL thread still is) */
    uint64_t breaker_open_ms;          /* open before the half-open probe; 2000 */
    unsigned breaker_failures;         /* consecutive failures that open; 3 (0 = 1) */
    int read_fallback;                 /* 1: reads use the primary when no replica is
                                        * healthy; 0: they fail with VL_ECONN; 1 */
    int read_your_writes;              /* 1: every read waits for the cluster's
                                        * writes (VL_MYSQL_READ_FRESH); 0 */
    int galera;                        /* 1: the hosts are a Galera cluster; 0 */
    uint64_t gtid_wait_ms;             /* MASTER_GTID_WAIT's bound per replica; 1000 */
    size_t primaries;                  /* URL form: the first N hosts are primary
                                        * candidates; 1 (0 = 1) */
    uint64_t primary_wait_ms;          /* with no writable primary, a write waits
                                        * this long for one; 0 = fails at once */
} vl_mysql_cluster_options;

/* As vl_mysql_options_init_sized; call it as vl_mysql_cluster_options_init(&o). */
VL_EXPORT void vl_mysql_cluster_options_init_sized(vl_mysql_cluster_options *o,
                                                   size_t struct_size);
#define vl_mysql_cluster_options_init(o) vl_mysql_cluster_options_init_sized((o), sizeof(*(o)))

/* Makes a cluster from a URL listing its hosts (see "Hosts"), one pool per
 * host, and starts the first check of every host at once. `url` and `opts`
 * are copied (opts->pool is read now). Returns NULL only when out of memory
 * or loop is NULL; a bad URL or option gives a cluster whose every future
 * fails with VL_EINVAL. The caller frees it with vl_mysql_cluster_free (or
 * vl_loop_free does). */
VL_EXPORT vl_mysql_cluster *vl_mysql_cluster_new(vl_loop *loop, const char *url,
                                                 const vl_mysql_cluster_options *opts);

/* The same with explicit URLs: `primaries[0..np)` are the primary
 * candidates in order, `replicas[0..nr)` the replicas (never primary). For
 * Galera, give every node as a primary (opts->galera set). opts->primaries
 * is ignored. Every URL is copied. Returns as vl_mysql_cluster_new; np + nr
 * of 0 or above VL_MYSQL_CLUSTER_MAX_HOSTS, or a NULL URL, gives a cluster
 * failed with VL_EINVAL. */
VL_EXPORT vl_mysql_cluster *vl_mysql_cluster_new_hosts(vl_loop *loop,
                                                       const char *const *primaries, size_t np,
                                                       const char *const *replicas, size_t nr,
                                                       const vl_mysql_cluster_options *opts);

/* Frees the cluster now (rule 4): its futures complete with VL_ECANCELED,
 * its pools and check connections are closed. Legal from a callback. NULL
 * is a no-op. Inside the callbacks vl_loop_free runs after freeing it, a
 * second free is a no-op and every call fails with VL_ECLOSED. */
VL_EXPORT void vl_mysql_cluster_free(vl_mysql_cluster *c);

/* A write, or any statement that must run on the primary: as
 * vl_mysql_pool_query / vl_mysql_pool_execute on the primary's pool (the
 * SQL and parameters are copied). When it succeeds its GTID is remembered
 * for read-your-writes. Returns NULL only when out of memory. */
VL_EXPORT vl_future *vl_mysql_cluster_query(vl_mysql_cluster *c, const char *sql);
VL_EXPORT vl_future *vl_mysql_cluster_execute(vl_mysql_cluster *c, const char *sql,
                                              const vl_mysql_param *params, size_t n);

/* Flags of a read. */
#define VL_MYSQL_READ_FRESH 1u      /* read-your-writes for this read */
#define VL_MYSQL_READ_STALE 2u      /* no wait, even with read_your_writes on */
#define VL_MYSQL_READ_NO_PRIMARY 4u /* never the primary (read_fallback 0 for
                                     * this read; a fresh read may still end
                                     * there when every replica timed out) */

/* A read: on the healthy replica with the fewest requests outstanding (see
 * "Health" and "Read-your-writes"); `flags` is VL_MYSQL_READ_* or 0. The
 * result is that of vl_mysql_pool_query / _execute; the SQL and parameters
 * are copied. Run only statements that may run on a replica and run
 * twice: a read lost with its connection is tried again elsewhere.
 * Returns NULL only when out of memory. Unknown flags fail the future with
 * VL_EINVAL. */
VL_EXPORT vl_future *vl_mysql_cluster_read(vl_mysql_cluster *c, const char *sql, unsigned flags);
VL_EXPORT vl_future *vl_mysql_cluster_read_execute(vl_mysql_cluster *c, const char *sql,
                                                   const vl_mysql_param *params, size_t n,
                                                   unsigned flags);

/* A transaction on the primary (Galera: the writer): as vl_mysql_pool_begin,
 * and the value is a vl_mysql_tx read with vl_future_mysql_tx and kept with
 * vl_future_take. Use vl_mysql_tx_query / _execute inside it. Returns NULL
 * only when out of memory. */
VL_EXPORT vl_future *vl_mysql_cluster_begin(vl_mysql_cluster *c);

/* Commits `tx` (consumed, as vl_mysql_tx_commit) and remembers the GTID of
 * the COMMIT for read-your-writes. A transaction committed with
 * vl_mysql_tx_commit directly commits the same way, but the cluster does
 * not learn its GTID. The COMMIT runs on the transaction's own connection,
 * whatever the cluster thinks of that host now. Returns NULL only when out
 * of memory or c is NULL (tx is then not consumed); a NULL tx fails the
 * future with VL_EINVAL; a cluster freed, failed by its URL or on a loop
 * being freed fails it with VL_ECLOSED or the URL's status, and tx is then
 * rolled back and consumed all the same. */
VL_EXPORT vl_future *vl_mysql_cluster_commit(vl_mysql_cluster *c, vl_mysql_tx *tx);

/* Completes once every host has been checked once: VL_OK when a primary
 * (Galera: a healthy node; a cluster without candidates: a healthy replica)
 * was found, VL_ECONN otherwise, with every host's reason in the message.
 * Known already: completes at once (still from the loop). No value; the
 * caller owns the future. */
VL_EXPORT vl_future *vl_mysql_cluster_ready(vl_mysql_cluster *c);

/* Checks every host now that may be checked (not one open and waiting for
 * its probe; one already in flight is not doubled) and completes with VL_OK
 * once no check is in flight any more, so that the stats then say what the
 * hosts said. No value; the caller owns the future. */
VL_EXPORT vl_future *vl_mysql_cluster_refresh(vl_mysql_cluster *c);

/* Host states, as the stats report them (why a host is skipped). */
enum {
    VL_MYSQL_HOST_UNKNOWN = 0, /* not checked yet */
    VL_MYSQL_HOST_HEALTHY,     /* takes requests */
    VL_MYSQL_HOST_LAGGING,     /* a replica behind (or its threads stopped) */
    VL_MYSQL_HOST_DOWN,        /* its last check failed; breaker still closed */
    VL_MYSQL_HOST_OPEN,        /* breaker open: skipped until the probe */
    VL_MYSQL_HOST_HALF_OPEN,   /* the one probe is in flight */
    VL_MYSQL_HOST_READ_ONLY,   /* a primary candidate that is read-only and
                                * not a replica: neither writes nor reads */
    VL_MYSQL_HOST_DRAINED      /* Galera: not synced in the primary component */
};

/* A snapshot of one host. The ABI rule of vl_pool_stats applies: prepare it
 * with vl_mysql_host_stats_init(&s). Borrowed strings are valid until the
 * cluster runs a callback again or is freed. */
typedef struct vl_mysql_host_stats {
    size_t struct_size;     /* set by vl_mysql_host_stats_init */
    const char *display;    /* the host's URL without password */
    int state;              /* VL_MYSQL_HOST_* */
    int primary;            /* 1 while it is the primary (Galera: the writer) */
    int candidate;          /* 1 when it may become the primary */
    int read_only;          /* @@read_only as last seen; -1 unknown */
    int64_t lag_ms;         /* Seconds_Behind_Master * 1000; 0 when not a
                             * replica; -1 unknown (a thread stopped) */
    size_t outstanding;     /* requests routed to it, not yet completed */
    unsigned failures;      /* consecutive transport failures */
    uint64_t requests;      /* requests routed to it (GTID waits included) */
    uint64_t errors;        /* transport failures counted */
    uint64_t checks;        /* health checks started (probes included) */
    uint64_t probes;        /* half-open probes */
    uint64_t opens;         /* times its breaker opened */
    uint64_t gtid_waits;    /* MASTER_GTID_WAITs run on it */
    uint64_t gtid_timeouts; /* of those, timed out (-1) or failed */
    const char *last_error; /* the last failure's message; "" none */
} vl_mysql_host_stats;

/* Zeroes the first struct_size bytes and stores struct_size. NULL no-op. */
VL_EXPORT void vl_mysql_host_stats_init_sized(vl_mysql_host_stats *s, size_t struct_size);
#define vl_mysql_host_stats_init(s) vl_mysql_host_stats_init_sized((s), sizeof(*(s)))

/* The number of hosts (0 for a cluster failed by its URL, or NULL). */
VL_EXPORT size_t vl_mysql_cluster_hosts(const vl_mysql_cluster *c);

/* Fills `out` with host `i` (in URL order: primaries, then replicas).
 * Returns VL_OK, or VL_EINVAL (c or out NULL, i out of range, unknown
 * struct_size: nothing written). */
VL_EXPORT int vl_mysql_cluster_host_stats(const vl_mysql_cluster *c, size_t i,
                                          vl_mysql_host_stats *out);

/* The positions read-your-writes waits for ("0-1-42", one per domain,
 * comma-separated), "" when no write produced one yet. Borrowed, valid
 * until the next write completes. */
VL_EXPORT const char *vl_mysql_cluster_gtid(const vl_mysql_cluster *c);

#ifdef __cplusplus
}
#endif
#endif
