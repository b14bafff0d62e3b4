/* lib/redis_reply.c - Redis replies: one allocation per reply.
 *
 * hiredis builds a tree of small allocations for every reply and frees it
 * as soon as the reply callback returns. We copy the tree into one block of
 * our own (nodes first, then every string), so that a reply can outlive the
 * callback, be taken out of its future, and be freed with one vl__free.
 * Measuring first and copying second costs two walks of the tree, which is
 * cheap next to the allocations it saves the caller.
 */
#include "redis_internal.h"

#include <hiredis/hiredis.h>
#include <string.h>

struct vl_redis_reply {
    int type;
    long long integer;
    size_t len;              /* bytes of str, or number of elements */
    char *str;               /* STRING, STATUS, ERROR: NUL-terminated */
    vl_redis_reply *element; /* ARRAY: `len` nodes, contiguous */
};

/* Adds the nodes and string bytes below `r` (not `r` itself). */
static void measure(const redisReply *r, size_t *nodes, size_t *bytes)
{
    size_t i;

    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        *bytes += r->len + 1;
        break;
    case REDIS_REPLY_ARRAY:
        *nodes += r->elements;
        for (i = 0; i < r->elements; i++)
            measure(r->element[i], nodes, bytes);
        break;
    default:
        break;
    }
}

typedef struct cursor {
    vl_redis_reply *node; /* next free node */
    char *text;           /* next free string byte */
} cursor;

static void fill(vl_redis_reply *d, const redisReply *r, cursor *cur)
{
    size_t i;

    memset(d, 0, sizeof(*d));
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
    case REDIS_REPLY_ERROR:
        d->type = r->type == REDIS_REPLY_STRING   ? VL_REDIS_STRING
                  : r->type == REDIS_REPLY_STATUS ? VL_REDIS_STATUS
                                                  : VL_REDIS_ERROR;
        d->str = cur->text;
        d->len = r->len;
        if (r->len > 0)
            memcpy(d->str, r->str, r->len);
        d->str[r->len] = '\0';
        cur->text += r->len + 1;
        break;
    case REDIS_REPLY_INTEGER:
        d->type = VL_REDIS_INTEGER;
        d->integer = r->integer;
        break;
    case REDIS_REPLY_ARRAY:
        d->type = VL_REDIS_ARRAY;
        d->len = r->elements;
        d->element = cur->node;
        cur->node += r->elements;
        for (i = 0; i < r->elements; i++)
            fill(&d->element[i], r->element[i], cur);
        break;
    default:
        d->type = VL_REDIS_NIL;
        break;
    }
}

vl_redis_reply *vl__redis_reply_copy(const redisReply *r)
{
    size_t nodes = 1, bytes = 0;
    vl_redis_reply *root;
    cursor cur;

    measure(r, &nodes, &bytes);
    root = vl__malloc(nodes * sizeof(*root) + bytes);
    if (root == NULL)
        return NULL;
    cur.node = root + 1;
    cur.text = (char *)(root + nodes);
    fill(root, r, &cur);
    return root;
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

long long vl_redis_reply_integer(const vl_redis_reply *r)
{
    return r != NULL && r->type == VL_REDIS_INTEGER ? r->integer : 0;
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
