/* SPDX-License-Identifier: BSD-3-Clause */
/* mysqlc.h - Connector/C helpers shared by the blocking modes (sync,
 * threads) and the raw mode: a prepared statement with its bound buffers,
 * and the conversion of a text or binary result into a bench_mreply.
 *
 * Only the files that talk to Connector/C directly include this header;
 * the async mode goes through volley's public API alone. */
#ifndef BENCH_MYSQLC_H
#define BENCH_MYSQLC_H

#include <mysql.h>

#include "bench.h"

/* One prepared statement of one connection. `q` is the request whose
 * values are bound: set it, then call bench_stmt_bind before executing.
 * The parameter binds point into q, the column binds into id and v, so a
 * bench_stmt must not move between bind and fetch. */
typedef struct bench_stmt {
    MYSQL_STMT *st;
    bench_mreq q;
    MYSQL_BIND param[2];
    unsigned long v_len;
    MYSQL_BIND col[2];
    int64_t id;  /* column 0 */
    char v[72];  /* column 1: bench_kv.v is VARCHAR(64) */
    unsigned long len[2];
    my_bool null[2], err[2];
} bench_stmt;

/* Allocates s->st on m without preparing it (raw prepares it with the
 * non-blocking calls). Returns 0, or -1 after printing why. */
int bench_stmt_init(bench_stmt *s, MYSQL *m);

/* Allocates and prepares the statement of op on m, blocking. Returns 0, or
 * -1 after printing why. */
int bench_stmt_open(bench_stmt *s, MYSQL *m, int op);

/* Closes the statement (sends COM_STMT_CLOSE on a blocking connection). */
void bench_stmt_close(bench_stmt *s);

/* Binds the values of s->q to the statement's markers. No I/O. Returns 0,
 * or -1 (mysql_stmt_error tells why). */
int bench_stmt_bind(bench_stmt *s);

/* After the statement ran (and, when it has columns, its result was
 * stored): binds the columns, fetches row 0 from the stored rows (no I/O),
 * frees the result and fills out. Pointers in out point into s. Returns 0,
 * or -1 (mysql_stmt_error tells why). */
int bench_stmt_read(bench_stmt *s, bench_mreply *out);

/* Fills out from a stored text result (res may be NULL for a statement
 * without columns); pointers in out point into res. */
void bench_text_reply(MYSQL *m, MYSQL_RES *res, bench_mreply *out);

#endif
