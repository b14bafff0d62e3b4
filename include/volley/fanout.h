/* SPDX-License-Identifier: BSD-3-Clause */
/* volley/fanout.h - one command or query on many endpoints at once.
 *
 * A fan-out opens one connection per endpoint, sends the same Redis command
 * or SQL query to each, and completes one future when every host has
 * answered, failed or run out of time. A dead or stopped host never delays
 * the others beyond its own deadline. Per-host results come back in the order
 * the endpoints were given.
 *
 * The future's value is a vl_fanout_result (borrowed in the callback; keep it
 * with vl_future_take and free it with vl_fanout_result_free). The future
 * itself completes with VL_OK even when hosts failed: each host has its own
 * status. It fails only for a bad argument (VL_EINVAL: no endpoint, no
 * command, or a malformed URL, named by its position: "host 3: bad port in
 * URL"), checked before any host starts, or out of memory.
 *
 * Cancelling the future (or a deadline on it) cancels the hosts still
 * running; so does freeing it, from anywhere, the on_host callback included.
 */
#ifndef VOLLEY_FANOUT_H
#define VOLLEY_FANOUT_H

#include "future.h"
#include "mysql.h"
#include "redis.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vl_fanout_result vl_fanout_result;

/* Called from the loop as each host finishes (for streaming output), with
 * the result so far and the host's index. Optional. */
typedef void (*vl_fanout_host_cb)(const vl_fanout_result *r, size_t host, void *ud);

/* The ABI rule of vl_redis_options applies: start from
 * vl_fanout_options_init(&o); new fields are only appended; a struct_size
 * the library does not know fails the fan-out's future with VL_EINVAL. */
typedef struct vl_fanout_options {
    size_t struct_size;          /* set by vl_fanout_options_init */
    uint64_t connect_timeout_ms; /* per host; 0 = only timeout_ms applies */
    uint64_t timeout_ms;         /* per host, connect plus command; 0 = none */
    size_t concurrency;          /* hosts in flight at once; 0 = all */
    const char *password;        /* for URLs that carry none; may be NULL.
                                  * Copied; never printed. */
    vl_fanout_host_cb on_host;   /* may be NULL */
    void *ud;
} vl_fanout_options;

/* Zeroes the first struct_size bytes of `o`, fills the defaults (connect
 * 5000 ms, timeout 10000 ms, concurrency 64) of the fields wholly within
 * them and stores struct_size. Call it as vl_fanout_options_init(&o). */
VL_EXPORT void vl_fanout_options_init_sized(vl_fanout_options *o, size_t struct_size);
#define vl_fanout_options_init(o) vl_fanout_options_init_sized((o), sizeof(*(o)))

/* Sends one Redis command (binary-safe argv; argvlen may be NULL for C
 * strings) to every URL (redis://, rediss://, unix://). Arguments and URLs are copied
 * before the call returns. */
VL_EXPORT vl_future *vl_fanout_redis(vl_loop *loop, const char *const *urls, size_t n,
                                     int argc, const char *const *argv,
                                     const size_t *argvlen, const vl_fanout_options *o);

/* One Redis command of a batch: argv[0..argc), argvlen NULL for C strings. */
typedef struct vl_redis_cmd {
    int argc;
    const char *const *argv;
    const size_t *argvlen;
} vl_redis_cmd;

#define VL_FANOUT_MAX_BATCH 64

/* Sends a batch of up to VL_FANOUT_MAX_BATCH commands, pipelined in order on
 * one connection per host, under the host's one deadline. A host's status is
 * that of its first failing command in batch order (message "command K:
 * ..."); every reply that came back stays readable with
 * vl_fanout_redis_reply_at. Commands and URLs are copied. */
VL_EXPORT vl_future *vl_fanout_redis_batch(vl_loop *loop, const char *const *urls, size_t n,
                                           const vl_redis_cmd *cmds, size_t ncmds,
                                           const vl_fanout_options *o);

/* Runs one SQL text on every mysql:// URL. */
VL_EXPORT vl_future *vl_fanout_mysql(vl_loop *loop, const char *const *urls, size_t n,
                                     const char *sql, const vl_fanout_options *o);

/* The result of a finished fan-out future (borrowed), NULL otherwise. */
VL_EXPORT const vl_fanout_result *vl_future_fanout(const vl_future *f);

/* Number of hosts in the result (as many as URLs were given). */
VL_EXPORT size_t vl_fanout_count(const vl_fanout_result *r);
/* The endpoint as it may be printed: the URL without its password. */
VL_EXPORT const char *vl_fanout_host(const vl_fanout_result *r, size_t i);
/* VL_OK; VL_ESERVER (the server replied with an error); VL_ETIMEDOUT;
 * VL_ECONN (refused, unreachable, DNS, authentication); VL_EINVAL (bad URL);
 * VL_ESTATE while the host is still running. */
VL_EXPORT int vl_fanout_status(const vl_fanout_result *r, size_t i);
/* The host's message ("" on success). Never contains a password. */
VL_EXPORT const char *vl_fanout_error(const vl_fanout_result *r, size_t i);
/* Milliseconds from the host's start to its outcome. */
VL_EXPORT double vl_fanout_latency_ms(const vl_fanout_result *r, size_t i);
/* The host's reply or result (borrowed from r), NULL when it has none. A
 * server error keeps its reply/result readable. */
VL_EXPORT const vl_redis_reply *vl_fanout_redis_reply(const vl_fanout_result *r, size_t i);
VL_EXPORT const vl_mysql_result *vl_fanout_mysql_result(const vl_fanout_result *r, size_t i);
/* Reply of command `cmd` of a batch on host i (borrowed from r; NULL when
 * it has none), and the number of commands per host (0 for MySQL). The
 * plain vl_fanout_redis_reply is the first command's. */
VL_EXPORT const vl_redis_reply *vl_fanout_redis_reply_at(const vl_fanout_result *r, size_t i,
                                                         size_t cmd);
VL_EXPORT size_t vl_fanout_batch_size(const vl_fanout_result *r);

/* For MySQL hosts that failed: the MySQL errno (0 when the failure did not
 * come from the server) and SQLSTATE ("" when none). */
VL_EXPORT unsigned vl_fanout_mysql_errno(const vl_fanout_result *r, size_t i);
VL_EXPORT const char *vl_fanout_mysql_sqlstate(const vl_fanout_result *r, size_t i);

/* Frees a result taken with vl_future_take, with every per-host reply and
 * result in it. NULL is a no-op. */
VL_EXPORT void vl_fanout_result_free(vl_fanout_result *r);

#ifdef __cplusplus
}
#endif
#endif
