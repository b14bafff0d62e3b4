/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_bind.h - prepared-statement parameters and result rows in
 * Connector/C's MYSQL_BIND form (lib/mysql_bind.c): what lib/mysql.c hands
 * to mysql_stmt_bind_param / mysql_stmt_bind_result, built and read here
 * without calling Connector/C, so it is tested without a server
 * (tests/test_mysql_bind.c). Private; only these two files and that test
 * include it.
 */
#ifndef VOLLEY_MYSQL_BIND_H
#define VOLLEY_MYSQL_BIND_H

#include "mysql_internal.h"

#include <mysql.h>

/* ---- parameters ---- */

/* A statement's parameters, copied from the caller: the array and one block
 * holding every STRING and BLOB value, which the copies point into. A few
 * small ones (the common case: a key or two) are kept inline, with no
 * allocation; the struct must then not move. */
#define VL__MPARAMS_SMALL 4
#define VL__MPARAMS_SMALL_DATA 64
typedef struct vl__mparams {
    vl_mysql_param *params;
    size_t n;
    char *data;
    vl_mysql_param small[VL__MPARAMS_SMALL];
    char small_data[VL__MPARAMS_SMALL_DATA];
} vl__mparams;

/* Copies n parameters, whose string bytes add up to `total` (as
 * vl__mysql_check_params measured them). VL_OK or VL_ENOMEM (dst empty). */
int vl__mparams_copy(vl__mparams *dst, const vl_mysql_param *src, size_t n, size_t total);
void vl__mparams_clear(vl__mparams *p);

/* A prepared statement's parameter bindings, kept from one execution to
 * the next. Connector/C copies a MYSQL_BIND array when it is bound
 * (mysql_stmt_bind_param) but reads the values, the lengths (through
 * `length`) and the NULL flags only when it executes, so the bindings
 * point at storage of the statement's own: each execution writes its
 * values there, and the statement is bound again only when a parameter's
 * type changed or a string outgrew its buffer. The arrays share one block;
 * each string or blob parameter has a buffer of its own. */
typedef union vl__mpval {
    int64_t i64;
    uint64_t u64;
    double d;
} vl__mpval;

typedef struct vl__mpbind {
    size_t n;
    int bound;             /* Connector/C holds these bindings (set by the caller) */
    MYSQL_BIND *bind;
    int *types;            /* per parameter: VL_MYSQL_P_* bound, -1 for none yet */
    vl__mpval *vals;
    MYSQL_TIME *times;
    unsigned long *lens;
    char **bufs;           /* strings and blobs */
    size_t *caps;
} vl__mpbind;

/* Writes the copied parameters' values into the bindings (made for p->n
 * parameters on first use; p->n must not change afterwards). Returns 1
 * when the bindings must be given to Connector/C (again): they were not
 * bound, a type changed or a buffer moved; 0 when they are bound as they
 * are; VL_ENOMEM, or VL_EINVAL for a type volley does not know (the
 * bindings then are not bound). */
int vl__mpbind_set(vl__mpbind *b, const vl__mparams *p);
void vl__mpbind_clear(vl__mpbind *b);

/* ---- bulk execution (array binding) ---- */

/* The rows of a bulk execution as Connector/C's column-wise arrays: per
 * column its values (long long, double, MYSQL_TIME *, or char * for
 * strings and blobs), lengths and indicators (STMT_INDICATOR_NULL for a
 * NULL cell). The arrays point into the copied parameters and `times`. */
typedef struct vl__mbulk {
    size_t ncols, nrows;
    int *types;            /* per column: VL_MYSQL_P_* of its cells; NULL if all are */
    void **vals;           /* per column: nrows values */
    unsigned long **lens;  /* per column: nrows lengths (strings and blobs) */
    char **inds;           /* per column: nrows indicators */
    MYSQL_TIME *times;     /* the DATE/TIME/DATETIME values, nrows * ncols */
} vl__mbulk;

/* Builds the column arrays of copied parameters p (nrows * ncols). VL_OK
 * or VL_ENOMEM (b left empty). */
int vl__mbulk_build(vl__mbulk *b, const vl__mparams *p, size_t ncols, size_t nrows);
void vl__mbulk_clear(vl__mbulk *b);

/* How many rows from `first` on fit in one round trip of at most `budget`
 * bytes as the protocol encodes them (at least one). */
size_t vl__mbulk_chunk(const vl__mbulk *b, size_t first, size_t budget);

/* Points bind[0..ncols) (zeroed by the caller) at the rows from `first`
 * on; Connector/C sends as many as STMT_ATTR_ARRAY_SIZE says. */
void vl__mbulk_bind(const vl__mbulk *b, size_t first, MYSQL_BIND *bind);

/* ---- result rows ---- */

/* One value fetched in the binary protocol, by the kind of column. */
typedef union vl__xval {
    long long i;
    double d;
    float fl;
    MYSQL_TIME t;
} vl__xval;

/* The result bindings of a statement: per column a MYSQL_BIND, the value
 * it fills, its length, NULL and truncation flags, and for strings a
 * buffer: sized from the column's declared length (at most
 * VL__MROW_FIRST_CAP bytes at first) and grown by vl__mrow_grow when a
 * value does not fit. The bindings are made once per prepared statement and
 * serve every execution. The arrays share one block. */
#define VL__MROW_FIRST_CAP 1024
typedef struct vl__mrow {
    MYSQL_BIND *bind;
    vl__xval *vals;
    unsigned long *lens;
    my_bool *nulls;
    my_bool *errs;
    char **bufs;
    size_t n;
} vl__mrow;

/* Binds the `n` columns described by `fields`. VL_OK or VL_ENOMEM (row
 * left empty). */
int vl__mrow_bind(vl__mrow *row, const MYSQL_FIELD *fields, unsigned n);
void vl__mrow_clear(vl__mrow *row);

/* Grows column i's buffer to hold `need` bytes (bind[i] follows it: bind
 * the row again before the next fetch). VL_OK or VL_ENOMEM (unchanged). */
int vl__mrow_grow(vl__mrow *row, size_t i, size_t need);

/* The bytes of the fetched row's non-NULL values, for the limits. */
uint64_t vl__mrow_bytes(const vl__mrow *row);

/* Appends the fetched row to `set` as text cells (the text protocol's
 * forms, see vl__mconv_value). VL_OK or VL_ENOMEM. */
int vl__mrow_store(const vl__mrow *row, const MYSQL_FIELD *fields, vl_mysql_result *set);

#endif
