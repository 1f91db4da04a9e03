# Draws bench/results/cpu-per-request.png from cpu-per-request.dat (written by bench.py):
# CPU time of the proxy process per request, by proxy, for the h1 and h2c scenarios.
# gnuplot -e "datafile='...'; outfile='...'" cpu-per-request.gp
set terminal pngcairo size 900,520 font "DejaVu Sans,11"
set output outfile
set title "Proxy CPU time per request (lower is better; median of rounds)"
set ylabel "CPU µs per request (utime + stime)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
set key below
set xtics nomirror
set datafile missing "NaN"
plot datafile using 2:xtic(1) title "HTTP/1.1 (wrk, 64 connections)" lc rgb "#3b6ea8", \
     ''       using 3 title "h2c (h2load, 16 x 10 streams)" lc rgb "#e0873a", \
     ''       using ($0-0.15):($2):(sprintf("%.1f",$2)) with labels offset 0,0.7 notitle, \
     ''       using ($0+0.15):($3):(sprintf("%.1f",$3)) with labels offset 0,0.7 notitle
