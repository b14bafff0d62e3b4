/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_bind.c - prepared-statement parameters and result rows as
 * MYSQL_BIND arrays (see mysql_bind.h). Only Connector/C's structs are used
 * here, never its functions: lib/mysql.c makes the calls.
 */
#include "mysql_bind.h"

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

/* ---- parameters ---- */

int vl__mysql_check_params(const vl_mysql_param *params, size_t n, size_t *total, size_t *bad,
                           const char **why)
{
    size_t i;

    *total = 0;
    for (i = 0; i < n; i++) {
        int t = params[i].type;
        *bad = i;
        if (t < VL_MYSQL_P_NULL || t > VL_MYSQL_P_DATETIME) {
            *why = "has a bad type";
            return VL_EINVAL;
        }
        if (t != VL_MYSQL_P_STRING && t != VL_MYSQL_P_BLOB)
            continue;
        if (params[i].v.str.len > 0 && params[i].v.str.ptr == NULL) {
            *why = "has no data";
            return VL_EINVAL;
        }
        if (params[i].v.str.len > SIZE_MAX - *total) {
            *why = "is too long";
            return VL_EINVAL;
        }
        *total += params[i].v.str.len;
    }
    return VL_OK;
}

void vl__mysql_params_copy(vl_mysql_param *dst, char *data, const vl_mysql_param *src, size_t n)
{
    size_t i, off = 0;

    for (i = 0; i < n; i++) {
        dst[i] = src[i];
        if (src[i].type != VL_MYSQL_P_STRING && src[i].type != VL_MYSQL_P_BLOB)
            continue;
        if (src[i].v.str.len > 0)
            memcpy(data + off, src[i].v.str.ptr, src[i].v.str.len);
        dst[i].v.str.ptr = data != NULL ? data + off : "";
        off += src[i].v.str.len;
    }
}

int vl__mparams_copy(vl__mparams *dst, const vl_mysql_param *src, size_t n, size_t total)
{
    dst->params = NULL;
    dst->n = 0;
    dst->data = NULL;
    if (n == 0)
        return VL_OK;
    dst->params = n <= VL__MPARAMS_SMALL ? dst->small : vl__malloc(n * sizeof(*dst->params));
    dst->data = total == 0                          ? NULL
                : total <= VL__MPARAMS_SMALL_DATA ? dst->small_data
                                                    : vl__malloc(total);
    if (dst->params == NULL || (total > 0 && dst->data == NULL)) {
        vl__mparams_clear(dst);
        return VL_ENOMEM;
    }
    dst->n = n;
    vl__mysql_params_copy(dst->params, dst->data, src, n);
    return VL_OK;
}

void vl__mparams_clear(vl__mparams *p)
{
    if (p->params != p->small)
        vl__free(p->params);
    if (p->data != p->small_data)
        vl__free(p->data);
    p->params = NULL;
    p->data = NULL;
    p->n = 0;
}

/* Connector/C's buffer type (and signedness) for a parameter of type t
 * (VL_MYSQL_P_*, checked). */
static void bind_type(MYSQL_BIND *b, int t)
{
    static const enum enum_field_types types[] = {
        MYSQL_TYPE_NULL,   MYSQL_TYPE_LONGLONG, MYSQL_TYPE_LONGLONG,
        MYSQL_TYPE_DOUBLE, MYSQL_TYPE_STRING,   MYSQL_TYPE_BLOB,
        MYSQL_TYPE_DATE,   MYSQL_TYPE_TIME,     MYSQL_TYPE_DATETIME};

    b->buffer_type = types[t];
    b->is_unsigned = t == VL_MYSQL_P_UINT64;
}

/* A DATE, TIME or DATETIME parameter as Connector/C's MYSQL_TIME. */
static void bind_time(const vl_mysql_param *p, MYSQL_BIND *b, MYSQL_TIME *t)
{
    t->year = p->v.t.year;
    t->month = p->v.t.month;
    t->day = p->v.t.day;
    t->hour = p->v.t.hour;
    t->minute = p->v.t.minute;
    t->second = p->v.t.second;
    t->second_part = p->v.t.usec;
    t->neg = p->v.t.negative != 0;
    if (p->type == VL_MYSQL_P_DATE) {
        b->buffer_type = MYSQL_TYPE_DATE;
        t->time_type = MYSQL_TIMESTAMP_DATE;
    } else if (p->type == VL_MYSQL_P_TIME) {
        /* The binary protocol carries a TIME's hours below 24 plus a day
         * count; Connector/C would truncate 838 hours to a byte. */
        b->buffer_type = MYSQL_TYPE_TIME;
        t->time_type = MYSQL_TIMESTAMP_TIME;
        t->year = t->month = 0;
        t->day = p->v.t.hour / 24;
        t->hour = p->v.t.hour % 24;
    } else {
        b->buffer_type = MYSQL_TYPE_DATETIME;
        t->time_type = MYSQL_TIMESTAMP_DATETIME;
    }
    b->buffer = t;
}

/* The storage of n parameters, in one block. VL_OK or VL_ENOMEM. */
static int mpbind_make(vl__mpbind *b, size_t n)
{
    size_t i, sz = n * (sizeof(MYSQL_BIND) + sizeof(int) + sizeof(vl__mpval) +
                        sizeof(MYSQL_TIME) + sizeof(unsigned long) + sizeof(char *) +
                        sizeof(size_t));
    char *m = vl__calloc(1, sz);

    if (m == NULL)
        return VL_ENOMEM;
    /* Largest alignment first: each array starts where the previous ends. */
    b->bind = (MYSQL_BIND *)(void *)m;
    b->times = (MYSQL_TIME *)(void *)(b->bind + n);
    b->vals = (vl__mpval *)(void *)(b->times + n);
    b->lens = (unsigned long *)(void *)(b->vals + n);
    b->bufs = (char **)(void *)(b->lens + n);
    b->caps = (size_t *)(void *)(b->bufs + n);
    b->types = (int *)(void *)(b->caps + n);
    for (i = 0; i < n; i++)
        b->types[i] = -1;
    b->n = n;
    b->bound = 0;
    return VL_OK;
}

void vl__mpbind_clear(vl__mpbind *b)
{
    size_t i;

    for (i = 0; i < b->n; i++)
        vl__free(b->bufs[i]);
    vl__free(b->bind);
    memset(b, 0, sizeof(*b));
}

/* Points binding i at its storage for a parameter of type t. */
static void mpbind_shape(vl__mpbind *b, size_t i, int t)
{
    MYSQL_BIND *bd = &b->bind[i];

    memset(bd, 0, sizeof(*bd));
    b->types[i] = t;
    bind_type(bd, t);
    switch (t) {
    case VL_MYSQL_P_NULL:
        break;
    case VL_MYSQL_P_STRING:
    case VL_MYSQL_P_BLOB:
        bd->buffer = b->bufs[i];
        bd->buffer_length = (unsigned long)b->caps[i];
        bd->length = &b->lens[i];
        break;
    case VL_MYSQL_P_DATE:
    case VL_MYSQL_P_TIME:
    case VL_MYSQL_P_DATETIME:
        bd->buffer = &b->times[i];
        break;
    default: /* the numbers */
        bd->buffer = &b->vals[i];
        break;
    }
}

/* The smallest buffer a string parameter gets: never NULL, since
 * Connector/C sends a binding without a buffer as NULL, not as ''. */
#define MPBIND_MIN_CAP 32

int vl__mpbind_set(vl__mpbind *b, const vl__mparams *p)
{
    size_t i;
    int rebind;

    if (b->bind == NULL && p->n > 0 && mpbind_make(b, p->n) != VL_OK)
        return VL_ENOMEM;
    rebind = !b->bound;
    for (i = 0; i < p->n; i++) {
        const vl_mysql_param *v = &p->params[i];
        size_t len;
        if (v->type < VL_MYSQL_P_NULL || v->type > VL_MYSQL_P_DATETIME) {
            b->bound = 0;
            return VL_EINVAL;
        }
        if (v->type != b->types[i]) {
            mpbind_shape(b, i, v->type);
            rebind = 1;
        }
        switch (v->type) {
        case VL_MYSQL_P_INT64:
            b->vals[i].i64 = v->v.i64;
            break;
        case VL_MYSQL_P_UINT64:
            b->vals[i].u64 = v->v.u64;
            break;
        case VL_MYSQL_P_DOUBLE:
            b->vals[i].d = v->v.d;
            break;
        case VL_MYSQL_P_STRING:
        case VL_MYSQL_P_BLOB:
            len = v->v.str.len;
            if (b->bufs[i] == NULL || len > b->caps[i]) {
                size_t cap = b->caps[i] * 2 > len ? b->caps[i] * 2 : len;
                char *nb = vl__malloc(cap > MPBIND_MIN_CAP ? cap : MPBIND_MIN_CAP);
                if (nb == NULL) {
                    b->bound = 0;
                    return VL_ENOMEM;
                }
                vl__free(b->bufs[i]);
                b->bufs[i] = nb;
                b->caps[i] = cap > MPBIND_MIN_CAP ? cap : MPBIND_MIN_CAP;
                mpbind_shape(b, i, v->type);
                rebind = 1;
            }
            if (len > 0)
                memcpy(b->bufs[i], v->v.str.ptr, len);
            b->lens[i] = (unsigned long)len;
            break;
        case VL_MYSQL_P_DATE:
        case VL_MYSQL_P_TIME:
        case VL_MYSQL_P_DATETIME:
            bind_time(v, &b->bind[i], &b->times[i]);
            break;
        default: /* NULL: nothing to write */
            break;
        }
    }
    return rebind;
}

/* ---- bulk execution ---- */

static const char *param_type_name(int t)
{
    static const char *const names[] = {"NULL",   "INT64", "UINT64", "DOUBLE", "STRING",
                                        "BLOB",   "DATE",  "TIME",   "DATETIME"};

    return t >= 0 && t <= VL_MYSQL_P_DATETIME ? names[t] : "?";
}

int vl__mbulk_check(const vl_mysql_param *params, size_t ncols, size_t nrows, size_t *total,
                    size_t *row, size_t *col, char *why, size_t whyn)
{
    size_t r, i, bad;
    const char *w;

    if (vl__mysql_check_params(params, ncols * nrows, total, &bad, &w) != VL_OK) {
        *row = bad / ncols;
        *col = bad % ncols;
        snprintf(why, whyn, "%s", w);
        return VL_EINVAL;
    }
    for (i = 0; i < ncols; i++) {
        int t = VL_MYSQL_P_NULL;
        size_t first = 0;
        for (r = 0; r < nrows; r++) {
            int rt = params[r * ncols + i].type;
            if (rt == VL_MYSQL_P_NULL)
                continue;
            if (t == VL_MYSQL_P_NULL) {
                t = rt;
                first = r;
            } else if (rt != t) {
                *row = r;
                *col = i;
                snprintf(why, whyn, "is %s, but the column is %s (row %zu)", param_type_name(rt),
                         param_type_name(t), first);
                return VL_EINVAL;
            }
        }
    }
    return VL_OK;
}

void vl__mbulk_clear(vl__mbulk *b)
{
    size_t i;

    for (i = 0; i < b->ncols; i++) {
        if (b->vals != NULL)
            vl__free(b->vals[i]);
        if (b->lens != NULL)
            vl__free(b->lens[i]);
        if (b->inds != NULL)
            vl__free(b->inds[i]);
    }
    vl__free(b->types);
    vl__free(b->vals);
    vl__free(b->lens);
    vl__free(b->inds);
    vl__free(b->times);
    memset(b, 0, sizeof(*b));
}

/* The size of one value in a column's array (for strings and times: a
 * pointer, as Connector/C's column-wise binding reads them). */
static size_t elem_size(int t)
{
    switch (t) {
    case VL_MYSQL_P_INT64:
    case VL_MYSQL_P_UINT64:
        return sizeof(long long);
    case VL_MYSQL_P_DOUBLE:
        return sizeof(double);
    default:
        return sizeof(void *);
    }
}

/* Fills column i's arrays from the parameters. */
static void bulk_column(vl__mbulk *b, const vl__mparams *p, size_t i)
{
    size_t r, n = b->ncols;
    int t = b->types[i];

    for (r = 0; r < b->nrows; r++) {
        const vl_mysql_param *v = &p->params[r * n + i];
        if (v->type == VL_MYSQL_P_NULL) {
            b->inds[i][r] = STMT_INDICATOR_NULL;
            continue;
        }
        b->inds[i][r] = STMT_INDICATOR_NONE;
        switch (t) {
        case VL_MYSQL_P_INT64:
            ((long long *)b->vals[i])[r] = v->v.i64;
            break;
        case VL_MYSQL_P_UINT64:
            ((long long *)b->vals[i])[r] = (long long)v->v.u64;
            break;
        case VL_MYSQL_P_DOUBLE:
            ((double *)b->vals[i])[r] = v->v.d;
            break;
        case VL_MYSQL_P_STRING:
        case VL_MYSQL_P_BLOB:
            ((const char **)b->vals[i])[r] = v->v.str.ptr;
            b->lens[i][r] = (unsigned long)v->v.str.len;
            break;
        default: {
            MYSQL_BIND scratch;
            MYSQL_TIME *tm = &b->times[r * n + i];
            memset(&scratch, 0, sizeof(scratch));
            bind_time(v, &scratch, tm);
            ((MYSQL_TIME **)b->vals[i])[r] = tm;
            break;
        }
        }
    }
}

int vl__mbulk_build(vl__mbulk *b, const vl__mparams *p, size_t ncols, size_t nrows)
{
    size_t i, r;
    int has_time = 0;

    memset(b, 0, sizeof(*b));
    b->ncols = ncols;
    b->nrows = nrows;
    b->types = vl__calloc(ncols, sizeof(*b->types));
    b->vals = vl__calloc(ncols, sizeof(*b->vals));
    b->lens = vl__calloc(ncols, sizeof(*b->lens));
    b->inds = vl__calloc(ncols, sizeof(*b->inds));
    if (b->types == NULL || b->vals == NULL || b->lens == NULL || b->inds == NULL)
        goto nomem;
    for (i = 0; i < ncols; i++) {
        for (r = 0; r < nrows && b->types[i] == VL_MYSQL_P_NULL; r++)
            b->types[i] = p->params[r * ncols + i].type;
        has_time |= b->types[i] >= VL_MYSQL_P_DATE;
        b->vals[i] = vl__calloc(nrows, elem_size(b->types[i]));
        b->inds[i] = vl__calloc(nrows, 1);
        if (b->vals[i] == NULL || b->inds[i] == NULL)
            goto nomem;
        if (b->types[i] == VL_MYSQL_P_STRING || b->types[i] == VL_MYSQL_P_BLOB) {
            b->lens[i] = vl__calloc(nrows, sizeof(unsigned long));
            if (b->lens[i] == NULL)
                goto nomem;
        }
    }
    if (has_time && (b->times = vl__calloc(nrows * ncols, sizeof(MYSQL_TIME))) == NULL)
        goto nomem;
    for (i = 0; i < ncols; i++)
        bulk_column(b, p, i);
    return VL_OK;
nomem:
    vl__mbulk_clear(b);
    return VL_ENOMEM;
}

size_t vl__mbulk_chunk(const vl__mbulk *b, size_t first, size_t budget)
{
    size_t r, i, used = 0;

    for (r = first; r < b->nrows; r++) {
        /* Per row: an indicator byte per column, then each value: 8 bytes
         * for a number, up to 13 for a time, a length prefix (at most 9)
         * and the bytes for a string. */
        size_t row = b->ncols;
        for (i = 0; i < b->ncols; i++) {
            if (b->inds[i][r] == STMT_INDICATOR_NULL)
                continue;
            row += b->lens[i] != NULL ? 9 + b->lens[i][r] : 13;
        }
        if (r > first && used + row > budget)
            break;
        used += row;
    }
    return r - first;
}

void vl__mbulk_bind(const vl__mbulk *b, size_t first, MYSQL_BIND *bind)
{
    size_t i;

    for (i = 0; i < b->ncols; i++) {
        MYSQL_BIND *x = &bind[i];
        int t = b->types[i];
        bind_type(x, t);
        x->buffer = (char *)b->vals[i] + first * elem_size(t);
        if (b->lens[i] != NULL)
            x->length = b->lens[i] + first;
        x->u.indicator = b->inds[i] + first;
    }
}

/* ---- result rows ---- */

#define ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))

int vl__mrow_bind(vl__mrow *row, const MYSQL_FIELD *fields, unsigned n)
{
    /* One allocation for the per-column arrays; each part starts on a
     * boundary that suits every member type. */
    size_t m = n ? n : 1, a = sizeof(max_align_t), off, o_vals, o_lens, o_bufs, o_nulls, o_errs;
    unsigned i;
    char *block;

    memset(row, 0, sizeof(*row));
    off = ALIGN_UP(m * sizeof(MYSQL_BIND), a);
    o_vals = off;
    off = ALIGN_UP(off + m * sizeof(vl__xval), a);
    o_lens = off;
    off = ALIGN_UP(off + m * sizeof(unsigned long), a);
    o_bufs = off;
    off = ALIGN_UP(off + m * sizeof(char *), a);
    o_nulls = off;
    off += m * sizeof(my_bool);
    o_errs = off;
    off += m * sizeof(my_bool);
    block = vl__calloc(1, off);
    if (block == NULL)
        return VL_ENOMEM;
    row->bind = (MYSQL_BIND *)(void *)block;
    row->vals = (vl__xval *)(void *)(block + o_vals);
    row->lens = (unsigned long *)(void *)(block + o_lens);
    row->bufs = (char **)(void *)(block + o_bufs);
    row->nulls = (my_bool *)(void *)(block + o_nulls);
    row->errs = (my_bool *)(void *)(block + o_errs);
    row->n = n;
    for (i = 0; i < n; i++) {
        MYSQL_BIND *b = &row->bind[i];
        b->is_null = &row->nulls[i];
        b->length = &row->lens[i];
        b->error = &row->errs[i];
        switch (vl__mconv_bind_kind(fields[i].type)) {
        case VL__MBIN_INT:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &row->vals[i].i;
            b->is_unsigned = (fields[i].flags & UNSIGNED_FLAG) != 0;
            break;
        case VL__MBIN_FLOAT:
            b->buffer_type = MYSQL_TYPE_FLOAT;
            b->buffer = &row->vals[i].fl;
            break;
        case VL__MBIN_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE;
            b->buffer = &row->vals[i].d;
            break;
        case VL__MBIN_TIME:
            b->buffer_type = fields[i].type == MYSQL_TYPE_NEWDATE ? MYSQL_TYPE_DATE
                                                                  : fields[i].type;
            b->buffer = &row->vals[i].t;
            break;
        default: {
            size_t cap = (fields[i].length < VL__MROW_FIRST_CAP ? (size_t)fields[i].length
                                                                 : VL__MROW_FIRST_CAP) + 1;
            row->bufs[i] = vl__malloc(cap);
            if (row->bufs[i] == NULL) {
                vl__mrow_clear(row);
                return VL_ENOMEM;
            }
            b->buffer_type = MYSQL_TYPE_BLOB;
            b->buffer = row->bufs[i];
            b->buffer_length = (unsigned long)cap;
            break;
        }
        }
    }
    return VL_OK;
}

int vl__mrow_grow(vl__mrow *row, size_t i, size_t need)
{
    size_t cap = row->bind[i].buffer_length;
    char *b;

    if (need <= cap)
        return VL_OK;
    while (cap < need)
        cap = cap < SIZE_MAX / 2 ? cap * 2 : need;
    b = vl__realloc(row->bufs[i], cap);
    if (b == NULL)
        return VL_ENOMEM;
    row->bufs[i] = b;
    row->bind[i].buffer = b;
    row->bind[i].buffer_length = (unsigned long)cap;
    return VL_OK;
}

void vl__mrow_clear(vl__mrow *row)
{
    size_t i;

    if (row->bufs != NULL)
        for (i = 0; i < row->n; i++)
            vl__free(row->bufs[i]);
    vl__free(row->bind); /* the other arrays live in the same block */
    memset(row, 0, sizeof(*row));
}

uint64_t vl__mrow_bytes(const vl__mrow *row)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < row->n; i++)
        if (!row->nulls[i])
            n += row->lens[i];
    return n;
}

int vl__mrow_store(const vl__mrow *row, const MYSQL_FIELD *fields, vl_mysql_result *set)
{
    vl__mcell *cells = vl__mres_row(set);
    char buf[VL__MCONV_BUF];
    size_t i;

    if (cells == NULL)
        return VL_ENOMEM;
    for (i = 0; i < row->n; i++) {
        const char *data;
        size_t len;
        vl__mbin v;
        int bt = row->bind[i].buffer_type;
        if (row->nulls[i])
            continue;
        /* The two common kinds, read from the binding straight away:
         * bytes as sent (no more than the buffer held, a truncated value
         * being reported as such), and integers. */
        if (bt == MYSQL_TYPE_BLOB) {
            len = row->lens[i] < row->bind[i].buffer_length ? row->lens[i]
                                                             : row->bind[i].buffer_length;
            if (vl__mres_cell(set, &cells[i], row->bufs[i], len) != VL_OK)
                return VL_ENOMEM;
            continue;
        }
        if (bt == MYSQL_TYPE_LONGLONG && fields[i].type != MYSQL_TYPE_YEAR) {
            data = vl__mconv_int(buf, row->vals[i].i, row->bind[i].is_unsigned, &len);
            if (vl__mres_cell_int(set, &cells[i], i, data, len, (int64_t)row->vals[i].i,
                                  row->bind[i].is_unsigned) != VL_OK)
                return VL_ENOMEM;
            continue;
        }
        v.i = row->vals[i].i;
        v.fl = row->vals[i].fl;
        v.d = row->vals[i].d;
        v.t = &row->vals[i].t;
        v.bytes = row->bufs[i];
        v.len = row->lens[i];
        v.cap = row->bind[i].buffer_length;
        if (vl__mconv_value(fields[i].type, fields[i].flags, fields[i].decimals, &v, buf, &data,
                            &len) == VL__MBIN_INT) {
            if (vl__mres_cell_int(set, &cells[i], i, data, len, (int64_t)v.i,
                                  (fields[i].flags & UNSIGNED_FLAG) != 0) != VL_OK)
                return VL_ENOMEM;
        } else if (vl__mres_cell(set, &cells[i], data, len) != VL_OK) {
            return VL_ENOMEM;
        }
    }
    return VL_OK;
}
