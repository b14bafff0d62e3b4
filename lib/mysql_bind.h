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
 * holding every STRING and BLOB value, which the copies point into. */
typedef struct vl__mparams {
    vl_mysql_param *params;
    size_t n;
    char *data;
} vl__mparams;

/* Copies n parameters, whose string bytes add up to `total` (as
 * vl__mysql_check_params measured them). VL_OK or VL_ENOMEM (dst empty). */
int vl__mparams_copy(vl__mparams *dst, const vl_mysql_param *src, size_t n, size_t total);
void vl__mparams_clear(vl__mparams *p);

/* Connector/C bindings of the copied parameters: `bind` and `times` are
 * arrays of p->n entries (zeroed by the caller); the bindings point into p
 * and times. VL_OK, or VL_EINVAL for a type volley does not know. */
int vl__mbind_params(const vl__mparams *p, MYSQL_BIND *bind, MYSQL_TIME *times);

/* ---- result rows ---- */

/* One value fetched in the binary protocol, by the kind of column. */
typedef union vl__xval {
    long long i;
    double d;
    float fl;
    MYSQL_TIME t;
} vl__xval;

/* The result bindings of a statement: per column a MYSQL_BIND, the value
 * it fills, its length, NULL and truncation flags, and for strings a buffer
 * sized from the stored rows' max_length. The arrays share one block. */
typedef struct vl__mrow {
    MYSQL_BIND *bind;
    vl__xval *vals;
    unsigned long *lens;
    my_bool *nulls;
    my_bool *errs;
    char **bufs;
    size_t n;
} vl__mrow;

/* Binds the `n` columns described by `fields` (whose max_length is known:
 * STMT_ATTR_UPDATE_MAX_LENGTH). VL_OK or VL_ENOMEM (row left empty). */
int vl__mrow_bind(vl__mrow *row, const MYSQL_FIELD *fields, unsigned n);
void vl__mrow_clear(vl__mrow *row);

/* The bytes of the fetched row's non-NULL values, for the limits. */
uint64_t vl__mrow_bytes(const vl__mrow *row);

/* Appends the fetched row to `set` as text cells (the text protocol's
 * forms, see vl__mconv_value). VL_OK or VL_ENOMEM. */
int vl__mrow_store(const vl__mrow *row, const MYSQL_FIELD *fields, vl_mysql_result *set);

#endif
