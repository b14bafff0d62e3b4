/* SPDX-License-Identifier: BSD-3-Clause */
/* lib/redis_reply.c - Redis replies: one allocation per reply.
 *
 * hiredis's reader builds a tree of small allocations per reply through a
 * table of object functions. We give it our own table instead, which builds
 * a vl_redis_reply in one block (nodes first, then every string) so that a
 * reply can outlive the callback, be taken out of its future, and be freed
 * with one vl__free, and hiredis allocates nothing per reply. The block's
 * size is known before hiredis parses the reply: the connection hands the
 * reader only complete replies, and the framer (lib/redis_resp.c) has
 * counted the items and string bytes of each one (vl__reply_build).
 */
#include "redis_internal.h"

#include <ctype.h>
#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>

#define RF_HIREDIS 1 /* root still belongs to hiredis: its freeObject frees it */

struct vl_redis_reply {
    int type;
    unsigned char flags;     /* root only: RF_HIREDIS */
    long long integer;
    size_t len;              /* bytes of str, or number of elements */
    char *str;               /* STRING, STATUS, ERROR: NUL-terminated */
    vl_redis_reply *element; /* ARRAY: `len` nodes, contiguous */
};

/* What a reply's objects are made of when there was no memory for its
 * block: hiredis is given this node for the root and every element, the
 * connection fails that one command with VL_ENOMEM. Never written. */
static vl_redis_reply nomem_node = {VL_REDIS_NIL, 0, 0, 0, NULL, NULL};

/* The node for `t`: the root's block is allocated here, an element is the
 * parent's next slot. NULL only when hiredis would overrun the measure,
 * which the framer rules out (hiredis then fails the stream). */
static vl_redis_reply *node_for(const redisReadTask *t)
{
    vl__reply_build *b = t->privdata;
    vl_redis_reply *parent, *d;

    if (t->parent == NULL) {
        size_t n = b->nodes > 0 ? b->nodes : 1;
        if (b->nodes == 0 || n > (SIZE_MAX - b->text) / sizeof(*d))
            return NULL;
        d = vl__malloc(n * sizeof(*d) + b->text);
        if (d == NULL)
            return &nomem_node;
        b->node = d + 1;
        b->node_end = d + n;
        b->text_at = (char *)(d + n);
        b->text_end = b->text_at + b->text;
        b->nodes = b->text = 0; /* used up */
        memset(d, 0, sizeof(*d));
        d->flags = RF_HIREDIS;
        return d;
    }
    parent = t->parent->obj;
    if (parent == &nomem_node)
        return &nomem_node;
    if (parent == NULL || t->idx < 0 || (size_t)t->idx >= parent->len)
        return NULL;
    d = &parent->element[t->idx];
    memset(d, 0, sizeof(*d));
    return d;
}

static void *make_string(const redisReadTask *t, char *str, size_t len)
{
    vl_redis_reply *d = node_for(t);
    vl__reply_build *b = t->privdata;

    if (d == NULL || d == &nomem_node)
        return d;
    if ((size_t)(b->text_end - b->text_at) < len + 1)
        return NULL;
    d->type = t->type == REDIS_REPLY_STRING   ? VL_REDIS_STRING
              : t->type == REDIS_REPLY_STATUS ? VL_REDIS_STATUS
                                              : VL_REDIS_ERROR;
    d->str = b->text_at;
    d->len = len;
    if (len > 0)
        memcpy(d->str, str, len);
    d->str[len] = '\0';
    b->text_at += len + 1;
    return d;
}

static void *make_array(const redisReadTask *t, int elements)
{
    vl_redis_reply *d = node_for(t);
    vl__reply_build *b = t->privdata;
    size_t n = elements > 0 ? (size_t)elements : 0;

    if (d == NULL || d == &nomem_node)
        return d;
    if ((size_t)(b->node_end - b->node) < n)
        return NULL;
    d->type = VL_REDIS_ARRAY;
    d->len = n;
    d->element = b->node;
    b->node += n;
    return d;
}

static void *make_integer(const redisReadTask *t, long long v)
{
    vl_redis_reply *d = node_for(t);

    if (d == NULL || d == &nomem_node)
        return d;
    d->type = VL_REDIS_INTEGER;
    d->integer = v;
    return d;
}

static void *make_nil(const redisReadTask *t)
{
    vl_redis_reply *d = node_for(t);

    if (d == NULL || d == &nomem_node)
        return d;
    d->type = VL_REDIS_NIL;
    return d;
}

/* hiredis frees every root it made once the reply callback has returned:
 * unless the connection took it (vl__redis_reply_take), it goes here. */
static void free_object(void *obj)
{
    vl_redis_reply *r = obj;

    if (r != NULL && r != &nomem_node && (r->flags & RF_HIREDIS))
        vl__free(r);
}

static redisReplyObjectFunctions build_fns = {make_string, make_array, make_integer, make_nil,
                                              free_object};

void vl__redis_reader_setup(struct redisReader *reader, vl__reply_build *b)
{
    memset(b, 0, sizeof(*b));
    reader->fn = &build_fns;
    reader->privdata = b;
}

void vl__reply_build_next(vl__reply_build *b, uint64_t nodes, uint64_t text)
{
    b->nodes = nodes <= SIZE_MAX ? (size_t)nodes : 0;
    b->text = text <= SIZE_MAX ? (size_t)text : 0;
}

vl_redis_reply *vl__redis_reply_take(void *reply)
{
    vl_redis_reply *r = reply;

    if (r == NULL || r == &nomem_node)
        return NULL;
    r->flags = 0;
    return r;
}

size_t vl__redis_reply_node_size(void)
{
    return sizeof(vl_redis_reply);
}

int vl__redis_reply_nomem(const vl_redis_reply *r)
{
    return r == &nomem_node;
}

int vl__redis_reply_is_error(const vl_redis_reply *r)
{
    return r != NULL && r->type == VL_REDIS_ERROR;
}

const char *vl__redis_reply_text(const vl_redis_reply *r)
{
    return r != NULL && r->str != NULL ? r->str : "";
}

const vl_redis_reply *vl_future_redis_reply(const vl_future *f)
{
    if (f == NULL || !vl_future_done(f) || vl__future_vtype(f) != VL__VAL_REDIS)
        return NULL;
    return vl_future_value(f);
}

int vl_redis_reply_type(const vl_redis_reply *r)
{
    return r != NULL ? r->type : 0;
}

int vl_redis_reply_integer(const vl_redis_reply *r, long long *out)
{
    if (r == NULL || out == NULL || r->type != VL_REDIS_INTEGER)
        return VL_EINVAL;
    *out = r->integer;
    return VL_OK;
}

int vl_redis_reply_double(const vl_redis_reply *r, double *out)
{
    char *end;
    double d;

    if (r == NULL || out == NULL)
        return VL_EINVAL;
    if (r->type == VL_REDIS_INTEGER) {
        *out = (double)r->integer;
        return VL_OK;
    }
    /* RESP2 sends doubles (INCRBYFLOAT, ZSCORE) as bulk strings. */
    if (r->type != VL_REDIS_STRING || r->len == 0 || r->len > 64 || isspace((unsigned char)r->str[0]))
        return VL_EINVAL;
    errno = 0;
    d = strtod(r->str, &end);
    if (end != r->str + r->len || errno == ERANGE)
        return VL_EINVAL;
    *out = d;
    return VL_OK;
}

/* A flat key/value array: an even number of elements, every key a string. */
static int is_map(const vl_redis_reply *r)
{
    size_t i;

    if (r == NULL || r->type != VL_REDIS_ARRAY || r->len % 2 != 0)
        return 0;
    for (i = 0; i < r->len; i += 2)
        if (r->element[i].type != VL_REDIS_STRING && r->element[i].type != VL_REDIS_STATUS)
            return 0;
    return 1;
}

size_t vl_redis_reply_map_count(const vl_redis_reply *r)
{
    return is_map(r) ? r->len / 2 : 0;
}

const vl_redis_reply *vl_redis_reply_map_key(const vl_redis_reply *r, size_t i)
{
    return is_map(r) && i < r->len / 2 ? &r->element[2 * i] : NULL;
}

const vl_redis_reply *vl_redis_reply_map_value(const vl_redis_reply *r, size_t i)
{
    return is_map(r) && i < r->len / 2 ? &r->element[2 * i + 1] : NULL;
}

const vl_redis_reply *vl_redis_reply_map_get(const vl_redis_reply *r, const char *key,
                                             size_t keylen)
{
    size_t i;

    if (!is_map(r) || key == NULL)
        return NULL;
    for (i = 0; i < r->len; i += 2) {
        const vl_redis_reply *k = &r->element[i];
        if (k->len == keylen && memcmp(k->str, key, keylen) == 0)
            return &r->element[i + 1];
    }
    return NULL;
}

const char *vl_redis_reply_str(const vl_redis_reply *r, size_t *len)
{
    if (r == NULL || r->str == NULL) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = r->len;
    return r->str;
}

size_t vl_redis_reply_count(const vl_redis_reply *r)
{
    return r != NULL && r->type == VL_REDIS_ARRAY ? r->len : 0;
}

const vl_redis_reply *vl_redis_reply_element(const vl_redis_reply *r, size_t i)
{
    if (r == NULL || r->type != VL_REDIS_ARRAY || i >= r->len)
        return NULL;
    return &r->element[i];
}

void vl_redis_reply_free(vl_redis_reply *r)
{
    vl__free(r);
}
