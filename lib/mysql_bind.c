/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/mysql_bind.c - prepared-statement parameters and result rows as
 * MYSQL_BIND arrays (see mysql_bind.h). Only Connector/C's structs are used
 * here, never its functions: lib/mysql.c makes the calls.
 */
#include "mysql_bind.h"

#include <stddef.h>
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

int vl__mparams_copy(vl__mparams *dst, const vl_mysql_param *src, size_t n, size_t total)
{
    size_t i, off = 0;

    memset(dst, 0, sizeof(*dst));
    if (n == 0)
        return VL_OK;
    dst->params = vl__calloc(n, sizeof(*dst->params));
    dst->data = total > 0 ? vl__malloc(total) : NULL;
    if (dst->params == NULL || (total > 0 && dst->data == NULL)) {
        vl__mparams_clear(dst);
        return VL_ENOMEM;
    }
    dst->n = n;
    for (i = 0; i < n; i++) {
        dst->params[i] = src[i];
        if (src[i].type != VL_MYSQL_P_STRING && src[i].type != VL_MYSQL_P_BLOB)
            continue;
        if (src[i].v.str.len > 0)
            memcpy(dst->data + off, src[i].v.str.ptr, src[i].v.str.len);
        dst->params[i].v.str.ptr = dst->data != NULL ? dst->data + off : "";
        off += src[i].v.str.len;
    }
    return VL_OK;
}

void vl__mparams_clear(vl__mparams *p)
{
    vl__free(p->params);
    vl__free(p->data);
    memset(p, 0, sizeof(*p));
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

int vl__mbind_params(const vl__mparams *p, MYSQL_BIND *bind, MYSQL_TIME *times)
{
    size_t i;

    for (i = 0; i < p->n; i++) {
        vl_mysql_param *v = &p->params[i];
        MYSQL_BIND *b = &bind[i];
        switch (v->type) {
        case VL_MYSQL_P_NULL:
            b->buffer_type = MYSQL_TYPE_NULL;
            break;
        case VL_MYSQL_P_INT64:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &v->v.i64;
            break;
        case VL_MYSQL_P_UINT64:
            b->buffer_type = MYSQL_TYPE_LONGLONG;
            b->buffer = &v->v.u64;
            b->is_unsigned = 1;
            break;
        case VL_MYSQL_P_DOUBLE:
            b->buffer_type = MYSQL_TYPE_DOUBLE;
            b->buffer = &v->v.d;
            break;
        case VL_MYSQL_P_STRING:
        case VL_MYSQL_P_BLOB:
            b->buffer_type = v->type == VL_MYSQL_P_STRING ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
            b->buffer = (void *)(uintptr_t)v->v.str.ptr;
            b->buffer_length = (unsigned long)v->v.str.len;
            break;
        case VL_MYSQL_P_DATE:
        case VL_MYSQL_P_TIME:
        case VL_MYSQL_P_DATETIME:
            bind_time(v, b, &times[i]);
            break;
        default:
            return VL_EINVAL;
        }
    }
    return VL_OK;
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
            size_t cap = (size_t)fields[i].max_length + 1;
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
        if (row->nulls[i])
            continue;
        v.i = row->vals[i].i;
        v.fl = row->vals[i].fl;
        v.d = row->vals[i].d;
        v.t = &row->vals[i].t;
        v.bytes = row->bufs[i];
        v.len = row->lens[i];
        v.cap = row->bind[i].buffer_length;
        vl__mconv_value(fields[i].type, fields[i].flags, fields[i].decimals, &v, buf, &data,
                        &len);
        if (vl__mres_cell(set, &cells[i], data, len) != VL_OK)
            return VL_ENOMEM;
    }
    return VL_OK;
}
