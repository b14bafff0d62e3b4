# SPDX-License-Identifier: BSD-3-Clause
# plot.gp - draws the benchmark chart from volley-bench's CSV.
#
#   gnuplot -e "csv='bench/results/latest.csv'; svg='bench/results/latest.svg'" bench/plot.gp
#
# Panels, one bar per row of each scenario, every bar labelled with its
# value and its load (c: connections, w: requests in flight):
#   1. throughput, on a LINEAR scale, so a 6-8x gap looks like one;
#   2. latency, p99 (light) behind p50 (dark) per row, on a log scale,
#      said so in the panel's title and axis (latencies span 10 us to 10 ms);
#   3. client CPU time per request, linear;
#   4. the scale sweep, CPU time per request of async and raw as requests,
#      connections and hosts grow (flat is good).

if (!exists("csv")) csv = 'bench/results/latest.csv'
if (!exists("svg")) svg = 'bench/results/latest.svg'

set datafile separator comma
# A filtered-out row (x = NaN) is skipped without breaking the line.
set datafile missing NaN
set terminal svg size 2200,2400 dynamic font "sans,11" background rgb "white"
set output svg

# CSV columns: 1 group, 2 name, 3 kind, 4 backend, 5 mode, 6 hosts,
# 7 connections, 8 window, 9 requests, 10 ops_per_sec, 11 p50_us, 12 p90_us,
# 13 p99_us, 14 p999_us, 15 max_us, 16 cpu_us_per_op, 17 peak_rss_kb,
# 18 speedup, 19 errors, 20-23 for the rows of kind "target" (one per
# engine target, group -1, which no panel draws), 24 speedup_over, 25 runs,
# 26 ops_min, 27 ops_max.

# Scenarios of kind cpu and latency, one cluster per scenario group.
isbar(k) = (k eq "cpu" || k eq "latency")
isref(m) = (strstrt(m, "redis-benchmark") == 1 || strstrt(m, "mariadb-slap") == 1)
# The async rows at the load of sync ("async 1 in flight") and of threads
# ("async N in flight").
isat1(m) = (m eq "async 1 in flight")
isatn(m) = (!isat1(m) && strstrt(m, "async ") == 1 && strstrt(m, " in flight") > 0)
# The async variants of the TLS, cluster and bulk scenarios: the first of
# each pair takes async's place, the second raw's (those groups have no raw);
# the legend names what the second is in each.
isfirst(m) = (m eq "async redis" || m eq "async cluster" || m eq "async refreshing" || \
              m eq "async row-by-row")
issecond(m) = (m eq "async rediss" || m eq "async 1 server" || m eq "async no refresh" || \
               m eq "async bulk x1000")
VARIANT = "async: rediss, 1 server, no refresh, bulk"
# The series a row belongs to.
cls(m) = (m eq "sync") ? "sync" : (m eq "threads") ? "threads" : \
         (m eq "async" || isfirst(m)) ? "async" : (m eq "raw") ? "raw" : \
         issecond(m) ? VARIANT : isat1(m) ? "async 1 in flight" : \
         isatn(m) ? "async at the threads' load" : (m eq "async conns") ? "async conns" : \
         isref(m) ? "reference tool" : "other"
slot(m) = (m eq "sync") ? -0.36 : (m eq "threads") ? -0.27 : \
          (m eq "async" || isfirst(m)) ? -0.18 : (m eq "raw" || issecond(m)) ? -0.09 : \
          isat1(m) ? 0.0 : isatn(m) ? 0.09 : (m eq "async conns") ? 0.18 : \
          (m eq "redis-benchmark -c 50 -P 16") ? 0.36 : 0.27
series = "sync threads async raw"
nextra = 5
extra(k) = (k == 1) ? VARIANT : (k == 2) ? "async 1 in flight" : \
           (k == 3) ? "async at the threads' load" : (k == 4) ? "async conns" : "reference tool"
# One color per series, the same in every panel.
color(s) = (s eq "sync") ? "#7f7f7f" : (s eq "threads") ? "#9467bd" : (s eq "async") ? "#1f77b4" : \
           (s eq "raw") ? "#2ca02c" : (s eq VARIANT) ? "#17becf" : \
           (s eq "async 1 in flight") ? "#aec7e8" : (s eq "async at the threads' load") ? "#ff7f0e" : \
           (s eq "async conns") ? "#bcbd22" : "#d62728"
w = 0.08
set style fill solid 0.85 border -1
set boxwidth w absolute
set grid ytics
set key outside right top vertical

# A bar's label: its value (k and M for big ones) and its load.
num(v) = (v >= 1e6) ? sprintf("%.2fM", v / 1e6) : (v >= 1e4) ? sprintf("%.0fk", v / 1e3) : \
         (v >= 100) ? sprintf("%.0f", v) : sprintf("%.2f", v)
load(c, wn) = sprintf(" c%d w%d", c, wn)

# Which panels have data: a run of some scenarios only (say -t soak, or
# -m async) must still give a chart, and no empty series.
has(cond) = cond ? 1 : 0
stats csv every ::1 using (has(isbar(strcol(3)))) nooutput
nbar = int(STATS_sum)
stats csv every ::1 using (has(strcol(3) eq "scale")) nooutput
nscale = int(STATS_sum)
npanels = (nbar > 0 ? 3 : 0) + (nscale > 0 ? 1 : 0)

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

if (npanels == 0) {
    set label 1 "no cpu, latency or scale runs in this CSV" at screen 0.5, 0.5 center
    unset border
    unset tics
    plot [0:1][0:1] NaN notitle
    exit
}

# The bars of series s (a cls() name) in column col, and their labels.
bars(s, col) = sprintf('csv every ::1 using ((isbar(strcol(3)) && cls(strcol(5)) eq "%s" && column(%d) > 0) ? $1 + slot(strcol(5)) : NaN):%d with boxes lc rgb "%s" title "%s"', s, col, col, color(s), s)
# The latency bars' labels give both percentiles: "p50/p99 c w".
latlabels(s) = sprintf('csv every ::1 using ((isbar(strcol(3)) && cls(strcol(5)) eq "%s" && $13 > 0) ? $1 + slot(strcol(5)) : NaN):13:(num($11) . "/" . num($13) . load($7, $8)) with labels rotate by 90 left offset 0,0.4 font "sans,8" notitle', s)
labels(s, col) = sprintf('csv every ::1 using ((isbar(strcol(3)) && cls(strcol(5)) eq "%s" && column(%d) > 0) ? $1 + slot(strcol(5)) : NaN):%d:(num(column(%d)) . load($7, $8)) with labels rotate by 90 left offset 0,0.4 font "sans,8" notitle', s, col, col, col)

set multiplot layout npanels,1 title "volley-bench: sync vs threads vs async vs raw (same hosts, same requests, every reply checked). Labels: value, c = connections, w = requests in flight"

if (nbar > 0) {
    set xrange [-0.6:gmax + 0.6]
    set xtics norotate nomirror ()
    do for [g = 1:gmax + 1] { if (names[g] ne "") { set xtics add (names[g] g - 1) } }
    # Each panel: every series with rows, its bars, then their labels (the
    # reference tools report throughput only, so they have no latency bar).
    do for [panel = 1:3] {
        col = (panel == 1) ? 10 : (panel == 2) ? 13 : 16
        if (panel == 2) {
            set logscale y
            set title "Latency per request: p99 (light) behind p50 (dark), labels p50/p99. LOG SCALE: each gridline is 10x"
            set ylabel "microseconds (log scale)"
            set yrange [*:*]
        } else {
            unset logscale y
            set yrange [0:*]
            set title (panel == 1) ? "Throughput (linear scale)" : "Client CPU time per request (user + system, linear scale)"
            set ylabel (panel == 1) ? "requests per second" : "microseconds per request"
        }
        cmd = ''
        do for [s in series] {
            stats csv every ::1 using (has(isbar(strcol(3)) && cls(strcol(5)) eq s && column(col) > 0)) nooutput
            if (STATS_sum > 0) {
                cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . bars(s, col) . ', ' . \
                      (panel == 2 ? latlabels(s) : labels(s, col))
                if (panel == 2) {
                    cmd = cmd . ', ' . sprintf('csv every ::1 using ((isbar(strcol(3)) && cls(strcol(5)) eq "%s" && $11 > 0) ? $1 + slot(strcol(5)) : NaN):11 with boxes fs solid 1.0 lc rgb "#202020" notitle', s)
                }
            }
        }
        do for [k = 1:nextra] {
            s = extra(k)
            stats csv every ::1 using (has(isbar(strcol(3)) && cls(strcol(5)) eq s && column(col) > 0)) nooutput
            if (STATS_sum > 0) {
                cmd = cmd . (cmd eq '' ? 'plot ' : ', ') . bars(s, col) . ', ' . \
                      (panel == 2 ? latlabels(s) : labels(s, col))
                if (panel == 2) {
                    cmd = cmd . ', ' . sprintf('csv every ::1 using ((isbar(strcol(3)) && cls(strcol(5)) eq "%s" && $11 > 0) ? $1 + slot(strcol(5)) : NaN):11 with boxes fs solid 1.0 lc rgb "#202020" notitle', s)
                }
            }
        }
        if (cmd eq '') {
            cmd = 'plot [0:1][0:1] NaN notitle'
        }
        eval cmd
    }
}

# The scale sweep: one point per run, labelled with what grew.
if (nscale > 0) {
    unset logscale y
    set title "Scale sweep (Redis GET): CPU time per request should stay flat (linear scale)"
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
                  sprintf(', csv every ::1 using ((strcol(3) eq "scale" && strcol(5) eq "%s") ? $1 : NaN):16:(sprintf("%%.2f", $16)) with labels offset 0,1 font "sans,8" notitle', m) . \
                  sprintf(', csv every ::1 using ((strcol(3) eq "scale" && strcol(5) eq "%s") ? $1 : NaN):(1e6 / $10) with linespoints pt 5 lw 1 title "%s wall us/request (1 / throughput)"', m, m)
        }
    }
    eval cmd
}

unset multiplot
