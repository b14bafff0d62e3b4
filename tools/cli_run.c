/* SPDX-License-Identifier: BSD-3-Clause */
/* tools/cli_run.c - how the volley CLI runs a job: one fan-out for the
 * MySQL hosts, and for the Redis hosts one batch fan-out per chunk of
 * VL_FANOUT_MAX_BATCH commands, all on one loop; a tick watches for Ctrl-C
 * and draws the progress line.
 */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define CLI_TICK_MS 100
#define CLI_PROGRESS_AFTER_MS 1000

typedef struct cli_runner cli_runner;

/* The hosts of one kind and the fan-out running on them. */
typedef struct cli_leg {
    cli_runner *run;
    int mysql;
    size_t *all, nall;   /* the job's indices of this kind's hosts */
    size_t *map, nmap;   /* those in the current fan-out */
    const char **urls;   /* their URLs, for the current fan-out */
    size_t chunk;        /* first command of the current fan-out */
    vl_future *f;        /* the current fan-out, until its callback */
    int done;
} cli_leg;

struct cli_runner {
    cli_job *job;
    cli_leg legs[2];
    vl_promise *done;
    vl_future *tick;
    uint64_t start_ms;
    size_t final;      /* hosts final so far */
    size_t last_drawn; /* what the progress line says */
    int drawn;
    int stopped;
};

/* A host is final after its last chunk, or once it cannot go on. */
static int host_final(const cli_leg *leg, const cli_rec *rec)
{
    size_t ncmds = leg->run->job->cmds != NULL ? leg->run->job->cmds->n : 0;

    if (leg->mysql)
        return 1;
    if (rec->status != VL_OK && rec->status != VL_ESERVER)
        return 1;
    return leg->chunk + VL_FANOUT_MAX_BATCH >= ncmds;
}

static void on_host(const vl_fanout_result *r, size_t i, void *ud)
{
    cli_leg *leg = ud;
    cli_job *job = leg->run->job;
    size_t g = leg->map[i];
    int batch = !leg->mysql && job->cmds->n > 1;

    if (leg->run->stopped)
        return; /* a cancelled host after Ctrl-C: it stays pending */
    if (cli_rec_add(&job->recs[g], r, i, batch) != 0)
        fprintf(stderr, "volley: out of memory rendering a reply\n");
    if (host_final(leg, &job->recs[g])) {
        job->recs[g].final = 1;
        leg->run->final++;
        if (job->on_final != NULL)
            job->on_final(g, job->ud);
    }
}

static void finish(cli_runner *run)
{
    if (run->done != NULL && run->legs[0].done && run->legs[1].done) {
        vl_promise_resolve(run->done, NULL, NULL); /* frees the promise */
        run->done = NULL;
    }
}

static int start_leg(cli_leg *leg);

static void on_fanout(vl_future *f, void *ud)
{
    cli_leg *leg = ud;
    cli_job *job = leg->run->job;

    leg->f = NULL;
    if (leg->run->stopped)
        return;
    if (vl_future_status(f) != VL_OK) {
        snprintf(job->fatal, sizeof(job->fatal), "%s", vl_future_error(f));
        job->fatal_code = vl_future_status(f);
        leg->run->legs[0].done = leg->run->legs[1].done = 1;
        finish(leg->run);
        return;
    }
    leg->chunk += VL_FANOUT_MAX_BATCH;
    if (start_leg(leg) != 0) {
        snprintf(job->fatal, sizeof(job->fatal), "out of memory");
        job->fatal_code = VL_ENOMEM;
        leg->run->legs[0].done = leg->run->legs[1].done = 1;
    }
    finish(leg->run);
}

/* Starts the leg's next fan-out on its hosts that can go on, or marks the
 * leg done. 0, or -1 when out of memory. */
static int start_leg(cli_leg *leg)
{
    cli_job *job = leg->run->job;
    vl_redis_cmd cmds[VL_FANOUT_MAX_BATCH];
    size_t k, ncmds = 0;

    leg->nmap = 0;
    for (k = 0; k < leg->nall; k++) {
        const cli_rec *rec = &job->recs[leg->all[k]];
        /* A Redis host that failed to connect or timed out is final; one
         * that got -ERR goes on, as redis-cli goes on after one. */
        if (rec->status == CLI_PENDING ||
            (!leg->mysql && (rec->status == VL_OK || rec->status == VL_ESERVER)))
            leg->map[leg->nmap++] = leg->all[k];
    }
    if (leg->nmap == 0 || (!leg->mysql && leg->chunk >= job->cmds->n)) {
        leg->done = 1;
        return 0;
    }
    for (k = 0; k < leg->nmap; k++)
        leg->urls[k] = job->urls[leg->map[k]];
    job->fo.on_host = on_host;
    job->fo.ud = leg;
    job->fo.password = job->password[leg->mysql];
    if (leg->mysql) {
        leg->f = vl_fanout_mysql(job->loop, leg->urls, leg->nmap, job->sql, &job->fo);
    } else {
        for (k = leg->chunk; k < job->cmds->n && ncmds < VL_FANOUT_MAX_BATCH; k++, ncmds++) {
            cmds[ncmds].argc = job->cmds->v[k].argc;
            cmds[ncmds].argv = (const char *const *)job->cmds->v[k].argv;
            cmds[ncmds].argvlen = job->cmds->v[k].len;
        }
        leg->f = vl_fanout_redis_batch(job->loop, leg->urls, leg->nmap, cmds, ncmds, &job->fo);
    }
    if (leg->f == NULL)
        return -1;
    if (vl_future_then(leg->f, on_fanout, leg) != VL_OK) {
        leg->f = NULL;
        return -1;
    }
    return 0;
}

/* "58/200 done", redrawn in place on stderr. */
static void draw_progress(cli_runner *run)
{
    uint64_t now = vl_loop_now_ms(run->job->loop);

    if (!run->job->progress || now - run->start_ms < CLI_PROGRESS_AFTER_MS ||
        (run->drawn && run->final == run->last_drawn))
        return;
    run->last_drawn = run->final;
    fprintf(stderr, "\r%zu/%zu done", run->final, run->job->n);
    fflush(stderr);
    run->drawn = 1;
}

static void on_tick(vl_future *f, void *ud)
{
    cli_runner *run = ud;

    (void)f;
    run->tick = NULL;
    if (run->done == NULL)
        return;
    if (*run->job->interrupt) {
        run->stopped = 1;
        vl_promise_fail(run->done, VL_ECANCELED, "interrupted");
        run->done = NULL;
        return;
    }
    draw_progress(run);
    run->tick = vl_loop_sleep(run->job->loop, CLI_TICK_MS);
    if (run->tick != NULL && vl_future_then(run->tick, on_tick, run) != VL_OK)
        run->tick = NULL;
}

/* Sorts the job's hosts into its two legs. 0, or -1 when out of memory. */
static int make_legs(cli_runner *run)
{
    cli_job *job = run->job;

    for (int m = 0; m < 2; m++) {
        cli_leg *leg = &run->legs[m];
        leg->run = run;
        leg->mysql = m;
        leg->all = malloc((job->n ? job->n : 1) * sizeof(size_t));
        leg->map = malloc((job->n ? job->n : 1) * sizeof(size_t));
        leg->urls = malloc((job->n ? job->n : 1) * sizeof(char *));
        if (leg->all == NULL || leg->map == NULL || leg->urls == NULL)
            return -1;
        for (size_t i = 0; i < job->n; i++)
            if (job->kind[i] == m)
                leg->all[leg->nall++] = i;
        leg->done = leg->nall == 0;
    }
    return 0;
}

static void free_legs(cli_runner *run)
{
    for (int m = 0; m < 2; m++) {
        cli_leg *leg = &run->legs[m];
        /* The callback of a pending fan-out runs (cancelled) from a later
         * turn of the loop: run->stopped makes it a no-op. */
        if (leg->f != NULL)
            vl_future_cancel(leg->f);
        free(leg->all);
        free(leg->map);
        free(leg->urls);
    }
}

int cli_run(cli_job *job)
{
    cli_runner run;
    vl_future *done;
    int rc = VL_ENOMEM;

    memset(&run, 0, sizeof(run));
    run.job = job;
    run.start_ms = vl_loop_now_ms(job->loop);
    run.done = vl_promise_new(job->loop);
    done = run.done != NULL ? vl_promise_future(run.done) : NULL;
    if (done == NULL || make_legs(&run) != 0)
        goto out;
    for (int m = 0; m < 2; m++)
        if (!run.legs[m].done && start_leg(&run.legs[m]) != 0)
            goto out;
    finish(&run);
    on_tick(NULL, &run);
    rc = vl_loop_run_until(job->loop, done);
    if (rc == VL_OK && job->fatal[0] != '\0')
        rc = job->fatal_code != VL_OK ? job->fatal_code : VL_EINVAL;
out:
    run.stopped = 1;
    if (run.drawn)
        fprintf(stderr, "\r\033[K");
    if (run.tick != NULL)
        vl_future_cancel(run.tick);
    free_legs(&run);
    vl_future_free(done);
    if (run.done != NULL)
        vl_promise_free(run.done);
    run.done = NULL;
    /* Let the cancelled fan-outs and the tick deliver their callbacks while
     * `run` still exists. */
    vl_loop_run(job->loop);
    return rc;
}
