# SPDX-License-Identifier: BSD-3-Clause
# plot.gp - draws the benchmark chart from volley-bench's CSV.
#
#   gnuplot -e "csv='bench/results/latest.csv'; svg='bench/results/latest.svg'" bench/plot.gp
#
# Top: throughput of every mode per scenario (log scale). Middle: client
# CPU time per request. Bottom: the scale sweep, CPU time per request of
# the async mode as requests, connections and hosts grow (flat is good).

if (!exists("csv")) csv = 'bench/results/latest.csv'
if (!exists("svg")) svg = 'bench/results/latest.svg'

set datafile separator comma
# A filtered-out row (x = NaN) is skipped without breaking the line.
set datafile missing NaN
set terminal svg size 1200,1300 dynamic font "sans,11" background rgb "white"
set output svg

# CSV columns: 1 group, 2 name, 3 kind, 4 backend, 5 mode, 6 hosts,
# 7 connections, 8 window, 9 requests, 10 ops_per_sec, 11 p50_us, 12 p90_us,
# 13 p99_us, 14 p999_us, 15 max_us, 16 cpu_us_per_op, 17 peak_rss_kb,
# 18 speedup, 19 errors; then 20-23 for the rows of kind "target" (one per
# engine target, group -1), which no panel draws.

# Scenarios of kind cpu and latency, one cluster per scenario group.
isbar(k) = (k eq "cpu" || k eq "latency")
slot(m) = (m eq "sync") ? -0.30 : (m eq "threads") ? -0.18 : \
          (m eq "async" || m eq "async redis") ? -0.06 : \
          (m eq "raw" || m eq "async rediss") ? 0.06 : \
          (m eq "redis-benchmark -c 50 -P 16") ? 0.30 : 0.18
# Everything else takes 0.18: the other reference tools, one per group, and
# "async conns", whose group's reference (-P 16) sits at 0.30.
w = 0.11
set style fill solid 0.85 border -1
set boxwidth w absolute
set grid ytics
set key outside right top vertical

# Which panels have data: a run of some scenarios only (say -t soak, or
# -m async) must still give a chart, and no empty series.
has(cond) = cond ? 1 : 0
stats csv every ::1 using (has(isbar(strcol(3)))) nooutput
nbar = int(STATS_sum)
stats csv every ::1 using (has(strcol(3) eq "scale")) nooutput
nscale = int(STATS_sum)
npanels = (nbar > 0 ? 2 : 0) + (nscale > 0 ? 1 : 0)

# Tic labels are collected first: xtic() in a filtered plot would also be
# evaluated for the rows it filters out. Arrays are indexed by group + 1.
stats csv every ::1 using 1 nooutput
amax = int(STATS_max)
array names[amax + 1]
array slabels[amax + 1]
do for [k = 1:amax + 1] { names[k] = ""; slabels[k] = "" }
stats csv every ::1 using (isbar(strcol(3)) ? (names[int($1) + 1] = strcol(2), $1) : 0) nooutput
stats csv every ::1 using (isbar(strcol(3)) ? $1 : -1) nooutput
gmax = int(STATS_max)
scalelabel(n, r, c, h) = (n eq "scale-requests") ? sprintf("n=%d", r) : \
                         (n eq "scale-connections") ? sprintf("c=%d", c) : sprintf("hosts=%d", h)
stats csv every ::1 using ((strcol(3) eq "scale") ? \
      (slabels[int($1) + 1] = scalelabel(strcol(2), $9, $7, $6), $1) : 0) nooutput

# A series for each mode (and reference tool) that has rows of that kind.
modes = "sync threads async raw"
# The async rows with a label of their own (it has a space): the TLS
# scenario's two, and redis-get-p16's on plain connections.
extras = 3
extra(k) = (k == 1) ? "async redis" : (k == 2) ? "async rediss" : "async conns"
refs = 5
ref(k) = (k == 1) ? "redis-benchmark -c 50" : (k == 2) ? "redis-benchmark -c 50 -P 16" : \
         (k == 3) ? "redis-benchmark -c 1 -P 1000" : (k == 4) ? "redis-benchmark --tls -c 50 -P 16" : \
         "mariadb-slap -c 8"

if (npanels == 0) {
    set label 1 "no cpu, latency or scale runs in this CSV" at screen 0.5, 0.5 center
    unset border
    unset tics
    plot [0:1][0:1] NaN notitle
    exit
}

set multiplot layout npanels,1 title "volley-bench: sync vs threads vs async vs raw (same hosts, same requests, every reply checked)"

if (nbar > 0) {
    set xrange [-0.6:gmax + 0.6]
    set xtics norotate nomirror ()
    do for [g = 1:gmax + 1] { if (names[g] ne "") { set xtics add (names[g] g - 1) } }
    set logscale y
    do for [panel = 1:2] {
        col = (panel == 1) ? 10 : 16
        set title (panel == 1) ? "Throughput" : "Client CPU time per request (user + system)"
        set ylabel (panel == 1) ? "requests per second (log)" : "microseconds per request (log)"
        cmd = ''
        do for [m in modes] {
            stats csv every ::1 using (has(isbar(strcol(3)) && strcol(5) eq m)) nooutput
            if (STATS_sum > 0) {
                cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . \
                      sprintf('csv every ::1 using ((isbar(strcol(3)) && strcol(5) eq "%s") ? $1 + slot("%s") : NaN):%d with boxes title "%s"', m, m, col, m)
            }
        }
        do for [k = 1:extras] {
            stats csv every ::1 using (has(isbar(strcol(3)) && strcol(5) eq extra(k))) nooutput
            if (STATS_sum > 0) {
                cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . \
                      sprintf('csv every ::1 using ((isbar(strcol(3)) && strcol(5) eq "%s") ? $1 + slot("%s") : NaN):%d with boxes title "%s"', extra(k), extra(k), col, extra(k))
            }
        }
        do for [k = 1:refs] {
            stats csv every ::1 using (has(strcol(5) eq ref(k))) nooutput
            if (panel == 1 && STATS_sum > 0) {
                cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . \
                      sprintf('csv every ::1 using ((strcol(5) eq "%s") ? $1 + slot("%s") : NaN):10 with boxes title "%s"', ref(k), ref(k), ref(k))
            }
        }
        eval cmd
    }
}

# The scale sweep: one point per run, labelled with what grew.
if (nscale > 0) {
    unset logscale y
    set title "Scale sweep (Redis GET): CPU time per request should stay flat"
    set ylabel "microseconds per request"
    set xrange [*:*]
    set yrange [0:*]
    set xtics norotate nomirror ()
    do for [k = 1:amax + 1] { if (slabels[k] ne "") { set xtics add (slabels[k] k - 1) } }
    cmd = ''
    do for [m in "async raw"] {
        stats csv every ::1 using (has(strcol(3) eq "scale" && strcol(5) eq m)) nooutput
        if (STATS_sum > 0) {
            cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . \
                  sprintf('csv every ::1 using ((strcol(3) eq "scale" && strcol(5) eq "%s") ? $1 : NaN):16 with linespoints pt 7 lw 2 title "%s cpu us/request"', m, m) . \
                  sprintf(', csv every ::1 using ((strcol(3) eq "scale" && strcol(5) eq "%s") ? $1 : NaN):(1e6 / $10) with linespoints pt 5 lw 1 title "%s wall us/request (1 / throughput)"', m, m)
        }
    }
    eval cmd
}

unset multiplot
