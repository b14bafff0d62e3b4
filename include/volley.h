/* SPDX-License-Identifier: BSD-3-Clause */
/* volley.h - async Redis and MySQL/MariaDB for C, on one libev loop.
 *
 * Include this umbrella header; each concept has its own header under
 * volley/: common (errors, allocator), loop, future, redis, pubsub, mysql,
 * mysql_cluster (primary, replicas, Galera), fanout, queue (queues and
 * semaphores), loop_group (a loop on every core).
 */
#ifndef VOLLEY_H
#define VOLLEY_H

#include "volley/common.h"
#include "volley/loop.h"
#include "volley/future.h"
#include "volley/redis.h"
#include "volley/pubsub.h"
#include "volley/redis_cluster.h"
#include "volley/mysql.h"
#include "volley/mysql_cluster.h"
#include "volley/fanout.h"
#include "volley/stream.h"
#include "volley/queue.h"
#include "volley/loop_group.h"

#endif
