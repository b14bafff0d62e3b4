/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_internal.h - what the MySQL files of lib/ share (private, not
 * installed):
 *   mysql.c          the Connector/C state machine: the only file that calls
 *                    Connector/C
 *   mysql_options.c  options and URL, checked into a vl__mysql_config
 *   mysql_bind.c     parameters and result rows as MYSQL_BINDs (its own
 *                    header, mysql_bind.h, since it needs Connector/C's types)
 *   mysql_convert.c  binary-protocol values to the text protocol's forms
 *   mysql_result.c   the result arena: plain bytes
 *   mysql_pool.c     pools, through the public API plus the hooks below
 */
#ifndef VOLLEY_MYSQL_INTERNAL_H
#define VOLLEY_MYSQL_INTERNAL_H

#include "internal.h"
#include "volley/mysql.h"

/* Values carried by futures with the VL__VAL_MYSQL tag start with a magic
 * word, so typed accessors can tell a result from a transaction. */
#define VL__MYSQL_MAGIC_RESULT 0x4d524553u /* "MRES" */
#define VL__MYSQL_MAGIC_TX 0x4d545831u     /* "MTX1" */

/* ---- results (lib/mysql_result.c) ---- */

typedef struct vl__mcell {
    const char *data; /* NULL for SQL NULL */
    size_t len;
} vl__mcell;

/* A new, empty result chain: its first link is returned, with no result set
 * yet (has_rows 0, no columns). NULL when out of memory. */
vl_mysql_result *vl__mres_new(void);
/* The same for a statement of a connection on `loop`: the first chunk may
 * come from the loop's cache (freed results' chunks, see vl__cache_get). */
vl_mysql_result *vl__mres_new_in(vl_loop *loop);
/* The link to fill for the next statement: the first link if it is still
 * unused, otherwise a new one appended to the chain. NULL on ENOMEM. */
vl_mysql_result *vl__mres_add(vl_mysql_result *root);
/* Arena allocation tied to the whole chain; NULL on ENOMEM. */
void *vl__mres_alloc(vl_mysql_result *r, size_t n);
/* Declares `n` columns (the link then has a result set). VL_OK or VL_ENOMEM. */
int vl__mres_set_columns(vl_mysql_result *r, size_t n);
int vl__mres_column(vl_mysql_result *r, size_t i, const char *name, size_t name_len, int type,
                    unsigned flags);
/* Column descriptions shared by the results of one prepared statement
 * (refcounted; mysql_result.c). _new copies those of a result whose
 * columns are set; _use_columns gives them to result link r (taking a
 * reference, released when the result is freed). */
typedef struct vl__mcolset vl__mcolset;
vl__mcolset *vl__mcolset_new(const vl_mysql_result *r);
void vl__mcolset_unref(vl__mcolset *cs);
void vl__mres_use_columns(vl_mysql_result *r, vl__mcolset *cs);
/* Copies column metadata from another result (for stream batches). */
int vl__mres_copy_columns(vl_mysql_result *dst, const vl_mysql_result *src);
/* A new row of columns() cells, zeroed (every cell NULL); NULL on ENOMEM. */
vl__mcell *vl__mres_row(vl_mysql_result *r);
/* Copies `len` bytes (plus a NUL) into the arena and points the cell at
 * them. VL_OK or VL_ENOMEM. */
int vl__mres_cell(vl_mysql_result *r, vl__mcell *cell, const char *data, size_t len);
/* The same for the text of a binary-protocol integer of column `col`: the
 * value itself (as Connector/C fetched it; is_unsigned from the column) is
 * kept next to the text, so that vl_mysql_result_int64 and _uint64 need
 * not parse the text back (for the first 64 columns; later ones are plain
 * cells). Every non-NULL cell of such a column must be made this way. */
int vl__mres_cell_int(vl_mysql_result *r, vl__mcell *cell, size_t col, const char *data,
                      size_t len, int64_t v, int is_unsigned);
/* Ends the rows of the link (builds its row index). VL_OK or VL_ENOMEM. */
int vl__mres_finish(vl_mysql_result *r);
void vl__mres_counts(vl_mysql_result *r, uint64_t affected, uint64_t insert_id,
                     unsigned warnings);
/* Records the GTID a statement's commit produced (copied into the arena).
 * VL_OK or VL_ENOMEM. */
int vl__mres_gtid(vl_mysql_result *r, const char *gtid, size_t len);
/* Records the error on the chain's first link (message copied). */
void vl__mres_error(vl_mysql_result *r, unsigned err, const char *sqlstate, const char *msg);

/* ---- conversion (lib/mysql_convert.c) ---- */

struct st_mysql_time; /* Connector/C's MYSQL_TIME */

/* volley's column type (VL_MYSQL_*) and flags (VL_MYSQL_FLAG_* in *flags)
 * for a column Connector/C describes by field type, field flags and
 * character set number. */
int vl__mconv_type(int field_type, unsigned field_flags, unsigned charsetnr, unsigned *flags);

/* How lib/mysql.c binds a result column of this field type: which member
 * of vl__mbin Connector/C fills. */
enum { VL__MBIN_INT, VL__MBIN_FLOAT, VL__MBIN_DOUBLE, VL__MBIN_TIME, VL__MBIN_BYTES };
int vl__mconv_bind_kind(int field_type);

/* One fetched binary-protocol value; the member that counts is the one
 * vl__mconv_bind_kind names. */
typedef struct vl__mbin {
    long long i;                    /* integers and YEAR (unsigned ones cast) */
    float fl;
    double d;
    const struct st_mysql_time *t;  /* DATE, TIME, DATETIME, TIMESTAMP */
    const char *bytes;              /* everything else, as sent */
    size_t len;                     /* the value's length as reported */
    size_t cap;                     /* the bytes held (the bound buffer's size) */
} vl__mbin;

/* The size of the scratch buffer vl__mconv_value formats into. */
#define VL__MCONV_BUF 64

/* The text of an integer column's value (not YEAR's, which has four
 * digits at least), formatted into `buf` (VL__MCONV_BUF bytes): returns
 * where it starts in buf (NUL-terminated), its length in *len. */
const char *vl__mconv_int(char *buf, long long v, int is_unsigned, size_t *len);

/* The text the text protocol would send for a binary value of a column of
 * that field type, flags and decimals: *data and *len point either into
 * `buf` (VL__MCONV_BUF bytes, NUL-terminated) or into v->bytes (at most
 * v->cap bytes). Returns the field type's vl__mconv_bind_kind. */
int vl__mconv_value(int field_type, unsigned field_flags, unsigned decimals, const vl__mbin *v,
                    char *buf, const char **data, size_t *len);

/* ---- configuration (lib/mysql_options.c) ---- */

/* How a connection uses TLS (the URL's ssl-* parameters). */
enum {
    VL__MYSQL_TLS_OFF = 0,
    VL__MYSQL_TLS_REQUIRED,       /* encrypted, the certificate not checked */
    VL__MYSQL_TLS_VERIFY_CA,      /* the chain checked, not the name */
    VL__MYSQL_TLS_VERIFY_IDENTITY /* the chain and the host name */
};

/* Everything a connection was told, with the URL's parameters applied over
 * the options. Strings are owned (the password is wiped when cleared). */
typedef struct vl__mysql_config {
    char *display;      /* the URL without the password */
    char *host;         /* as written in the URL */
    int port;
    char *user;
    char *password;
    char *db;
    char *socket_path;
    char *charset;
    char *init_sql;
    uint64_t connect_timeout_ms;
    uint64_t query_timeout_ms;
    uint64_t read_timeout_ms;
    uint64_t max_result_bytes;
    uint64_t max_row_bytes;
    int multi;
    int track_gtid;
    int tls;            /* VL__MYSQL_TLS_* */
    char *ssl_ca, *ssl_capath, *ssl_cert, *ssl_key, *ssl_cipher, *tls_version;
} vl__mysql_config;

/* Reads the options (NULL: the defaults) and the URL into `cfg`. VL_OK;
 * VL_ENOMEM; or the refusal (VL_EINVAL, VL_EUNSUPPORTED) with its message
 * in *msg (freed by the caller with vl__free). cfg->display is set whenever
 * the result is not VL_ENOMEM ("mysql://?" when the URL could not be read).
 * Clear cfg with vl__mysql_config_clear in every case. */
int vl__mysql_config_parse(vl__mysql_config *cfg, const char *url, const vl_mysql_options *opts,
                           char **msg);
void vl__mysql_config_clear(vl__mysql_config *cfg);

/* ---- connection hooks for the pool (lib/mysql.c) ---- */

/* Like vl_mysql_new, for a pool: not registered with the loop (the pool
 * frees it), and session_track_state_change is enabled so a changed session
 * can be recognised. */
vl_mysql *vl__mysql_new_pooled(vl_loop *loop, const char *url, const vl_mysql_options *opts);

/* Reads a caller's options (NULL: the defaults) into `dst`, as every
 * function taking vl_mysql_options does: VL_OK, or VL_EINVAL with the
 * message in why. */
int vl__mysql_options_read(vl_mysql_options *dst, const vl_mysql_options *src, char *why,
                           size_t whyn);

/* A pooled connection keeps the loop running while it connects only when
 * its pool holds it (on != 0): a request waits that it may serve. */
void vl__mysql_hold(vl_mysql *c, int on);

/* Called when an idle connection's server hangs up or the connection is
 * closed by an error; the hook may free the connection. */
typedef void (*vl__mysql_hook)(vl_mysql *c, void *ud);
void vl__mysql_set_hook(vl_mysql *c, vl__mysql_hook fn, void *ud);

/* Called once for each of the connection's statements (not its internal
 * session restores) after its future completed, with its status, from the
 * loop (a defer: never inside the call that made the statement, never
 * inside the state machine): the pool learns its connection is free again
 * without a future of its own per request. The hook may free the
 * connection. NULL turns it off (and drops a call not yet made). */
typedef void (*vl__mysql_done_hook)(vl_mysql *c, void *ud, int status);
void vl__mysql_set_done_hook(vl_mysql *c, vl__mysql_done_hook fn, void *ud);

/* Runs a statement whose future the caller made already (a pool request
 * that waited for a connection): the statement completes `f`, which it
 * owns from now on (cancelling f cancels the statement), and copies what
 * it needs. kind: VL__MYSQL_QUERY (sql), VL__MYSQL_EXEC (n parameters) or
 * VL__MYSQL_BULK (nrows rows of n), each checked by the caller as
 * vl_mysql_query / _execute / _execute_bulk check them. VL_OK, or
 * VL_ENOMEM with f untouched. */
enum { VL__MYSQL_QUERY, VL__MYSQL_EXEC, VL__MYSQL_BULK };
int vl__mysql_submit_into(vl_mysql *c, vl_future *f, int kind, const char *sql,
                          const vl_mysql_param *params, size_t n, size_t nrows);

/* Runs a statement whose SQL and parameters the caller checked already,
 * as vl_mysql_query / _execute / _execute_bulk would check them (a pool's
 * request, checked when it was made): the same as those calls without the
 * second check. kind as for vl__mysql_submit_into; total is the bytes of
 * the parameters' strings and blobs, as vl__mysql_check_params or
 * vl__mbulk_check counted them. Returns the statement's future, NULL when
 * out of memory. */
vl_future *vl__mysql_run_checked(vl_mysql *c, int kind, const char *sql,
                                 const vl_mysql_param *params, size_t n, size_t nrows,
                                 size_t total);

/* State bits for the clean-return rule. */
#define VL__MYSQL_BROKEN 1   /* closed, failed or never connected */
#define VL__MYSQL_BUSY 2     /* a statement queued or in flight */
#define VL__MYSQL_IN_TRANS 4 /* the server reports an open transaction */
#define VL__MYSQL_DIRTY 8    /* the server reported a session state change */
unsigned vl__mysql_state(const vl_mysql *c);
/* vl__mysql_state(c) & (VL__MYSQL_BUSY | VL__MYSQL_BROKEN), without asking
 * about the session: whether a statement just handed to the connection
 * still runs on it (or it broke). */
unsigned vl__mysql_in_use(const vl_mysql *c);

/* COM_RESET_CONNECTION (queued like a statement): rolls back, drops session
 * state and the statement cache. Completes with VL_OK or an error. */
vl_future *vl__mysql_reset(vl_mysql *c);

/* Checks an idle connection without blocking (poll with no timeout) just
 * before it is handed out: 1 when usable, 0 when the server hung up (the
 * connection is then closed, without calling the hook) or is not open. */
int vl__mysql_probe_idle(vl_mysql *c, int poll_socket);

/* Checks a URL and options as vl_mysql_new would, without connecting:
 * VL_OK, VL_ENOMEM, or the failure (VL_EINVAL, VL_EUNSUPPORTED) with its
 * message in *msg (the caller frees it with vl__free). */
int vl__mysql_check_url(vl_loop *loop, const char *url, const vl_mysql_options *opts, char **msg);

/* (lib/mysql_bind.c) Checks prepared-statement parameters as
 * vl_mysql_execute does, before
 * anything is copied: VL_OK with the bytes their values need in *total, or
 * VL_EINVAL with the index in *bad and the reason (static text) in *why. */
int vl__mysql_check_params(const vl_mysql_param *params, size_t n, size_t *total, size_t *bad,
                           const char **why);

/* (lib/mysql_bind.c) Checks nrows * ncols parameters (row after row) as a
 * bulk execution needs them: each valid (vl__mysql_check_params), and every
 * column of one type in every row but for NULLs. VL_OK with the string bytes in *total,
 * or VL_EINVAL with row and column in *row, *col and the reason in why. */
int vl__mbulk_check(const vl_mysql_param *params, size_t ncols, size_t nrows, size_t *total,
                    size_t *row, size_t *col, char *why, size_t whyn);

/* (lib/mysql_bind.c) Copies n checked parameters into dst and their STRING
 * and BLOB bytes, one after another, into data (as many bytes as
 * vl__mysql_check_params counted; NULL when none), pointing the copies
 * there. An empty string points at "". */
void vl__mysql_params_copy(vl_mysql_param *dst, char *data, const vl_mysql_param *src, size_t n);

#endif
