#!/usr/bin/env bash
# Load comparison: wrk against the upstream directly (the physical limit), nginx as a
# reverse proxy (1 worker, upstream keepalive 256), the bare hyper peer (when built)
# and Switchyard (with and without request metrics), alternating inside each
# repetition; then h2load over h2c against Switchyard and nginx.
#
#   apt-get install nginx wrk nghttp2-client      # once
#   bash ../shared/bench/build-hyper-peer.sh      # optional: the bare hyper peer
#   bash benches/load/run.sh
#
# Knobs: DURATION=10s REPS=5 CONNS="32 128" PATHS="/ /16k" WARMUP=2s
#        TARGETS="direct nginx hyper gateway gateway-nometrics" H2=1 (h2load too)
#        also: nginx-log, gateway-log (each with its access log on, to a file; a -log
#        row's "/nginx" is against nginx-log when that runs too); nginx-3, gateway-3
#        (three upstream replicas: nginx's upstream block of 3, a version with 3
#        endpoints; a -3 row's "/nginx" is against nginx-3); gateway-pgo (the production
#        build of scripts/pgo-build.sh, GATEWAY_PGO_BIN, beside the plain one); nginx-fields
#        (nginx doing the gateway's header work: its `authorization` dropped, the seven
#        fields the gateway sets sent upstream, two added to the answer; its "/nginx" is
#        against plain nginx)
# Prints per row: req/s median and min-max, p50, p99, the proxy's CPU us/request, and
# ratios against direct and nginx; gateway rows also "us/req over hyper".
set -euo pipefail
. "$(dirname "$0")/lib.sh"
DURATION=${DURATION:-10s}; REPS=${REPS:-5}; CONNS=${CONNS:-"32 128"}; PATHS=${PATHS:-"/ /16k"}
WARMUP=${WARMUP:-2s}; H2=${H2:-1}
for t in wrk nginx curl; do command -v $t >/dev/null || { echo "$t missing: apt-get install nginx wrk nghttp2-client curl"; exit 1; }; done
[ "$H2" = 1 ] && { command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client"; exit 1; }; }

(cd "$ROOT" && cargo build --release --quiet)
prepare
trap stop_all EXIT
stop_all
start_nginx upstream upstream.conf "$UPSTREAM_PORT"
start_nginx proxy-nginx proxy-nginx.conf "$NGINX_PORT"
TARGETS=${TARGETS:-"direct nginx hyper gateway gateway-nometrics"}
have=""
for t in $TARGETS; do
    case $t in
        hyper) start_hyper && have="$have hyper" ;;
        gateway) start_gateway gateway "$GATEWAY_PORT" "$GATEWAY_ADMIN" true; have="$have gateway" ;;
        gateway-nometrics) start_gateway gateway-nometrics "$NOMETRICS_PORT" "$NOMETRICS_ADMIN" false; have="$have gateway-nometrics" ;;
        gateway-log) start_gateway gateway-log "$LOGGING_PORT" "$LOGGING_ADMIN" true true; have="$have gateway-log" ;;
        nginx-log) start_nginx_logging; have="$have nginx-log" ;;
        nginx-3) start_nginx_replicas; have="$have nginx-3" ;;
        nginx-fields) start_nginx_fields; have="$have nginx-fields" ;;
        gateway-3) start_gateway gateway-3 "$GATEWAY3_PORT" "$GATEWAY3_ADMIN" true false 3; have="$have gateway-3" ;;
        gateway-pgo)
            if [ -x "$GATEWAY_PGO_BIN" ]; then
                GW_BIN=$GATEWAY_PGO_BIN start_gateway gateway-pgo "$PGO_PORT" "$PGO_ADMIN" true; have="$have gateway-pgo"
            else log "no production build at $GATEWAY_PGO_BIN (bash scripts/pgo-build.sh); skipping it"; fi ;;
        *) have="$have $t" ;;
    esac
done
TARGETS=$have

port_of() { case $1 in direct) echo $UPSTREAM_PORT ;; nginx) echo $NGINX_PORT ;; nginx-log) echo $NGINX_LOG_PORT ;; nginx-3) echo $NGINX3_PORT ;; nginx-fields) echo $NGINX_FIELDS_PORT ;; hyper) echo $HYPER_PORT ;; gateway) echo $GATEWAY_PORT ;; gateway-nometrics) echo $NOMETRICS_PORT ;; gateway-log) echo $LOGGING_PORT ;; gateway-3) echo $GATEWAY3_PORT ;; gateway-pgo) echo $PGO_PORT ;; esac; }
proc_of() { case $1 in direct) echo "" ;; nginx) echo proxy-nginx ;; nginx-log) echo proxy-nginx-log ;; nginx-3) echo proxy-nginx-3 ;; nginx-fields) echo proxy-nginx-fields ;; *) echo "$1" ;; esac; }
# nginx-fields gets a field of a gateway token's length, and drops it as the gateway does
hdr_of() { case $1 in gateway*) echo "Authorization: Bearer $(cat "$BENCH_TMP/run/$1.token")" ;; nginx-fields) echo "Authorization: Bearer swy_$(printf '%064d' 0)" ;; *) echo "X-Bench: 1" ;; esac; }

for t in $TARGETS; do
    for p in $PATHS; do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "$(hdr_of "$t")" "http://127.0.0.1:$(port_of "$t")$p")
        [ "$code" = 200 ] || { echo "target $t path $p answered $code"; exit 1; }
    done
done

OUT="$BENCH_TMP/results/$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"; TSV="$OUT/runs.tsv"
CLK=$(getconf CLK_TCK)
echo "# $(date -u +%FT%TZ) $(uname -srm) cores=$(nproc) duration=$DURATION reps=$REPS" > "$TSV"
printf 'path\tconns\trep\ttarget\trps\tp50_ms\tp99_ms\treqs\terrors\tproxy_us_per_req\n' >> "$TSV"
for path in $PATHS; do
  for c in $CONNS; do
    for t in $TARGETS; do wrk -t1 -c"$c" -d"$WARMUP" -H "$(hdr_of "$t")" "http://127.0.0.1:$(port_of "$t")$path" >/dev/null 2>&1 || true; done
    for rep in $(seq 1 "$REPS"); do
      for t in $TARGETS; do
        px=$(proc_of "$t"); pids=""; [ -n "$px" ] && pids=$(pids_of "$px")
        p0=$(cpu_ticks $pids)
        raw="$OUT/wrk_${t}_c${c}_$(echo "$path" | tr -c 'a-z0-9\n' '_')_r$rep.txt"
        wrk -t1 -c"$c" -d"$DURATION" --latency -H "$(hdr_of "$t")" "http://127.0.0.1:$(port_of "$t")$path" > "$raw" 2>&1
        p1=$(cpu_ticks $pids)
        rps=$(awk '/Requests\/sec:/{print $2}' "$raw"); reqs=$(awk '/requests in/{print $1}' "$raw")
        p50=$(to_ms "$(awk '$1=="50%"{print $2}' "$raw")"); p99=$(to_ms "$(awk '$1=="99%"{print $2}' "$raw")")
        errs=$(awk '/Socket errors|Non-2xx/{gsub(/^ +/,""); printf "%s; ", $0}' "$raw"); [ -z "$errs" ] && errs=0
        us=$(awk -v d=$((p1-p0)) -v clk="$CLK" -v n="$reqs" 'BEGIN{printf "%.2f", (n>0)? d*1e6/clk/n : 0}')
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$path" "$c" "$rep" "$t" "$rps" "$p50" "$p99" "$reqs" "$errs" "$us" >> "$TSV"
        log "$path c=$c rep=$rep $t: $rps req/s p50=${p50}ms p99=${p99}ms cpu=${us}us/req errors=$errs"
      done
    done
  done
done

awk -F'\\t' '
function median(s,   n, a, i, j, t) { n = split(s, a, " "); for (i=1;i<=n;i++) for (j=i+1;j<=n;j++) if (a[j]+0 < a[i]+0) { t=a[i]; a[i]=a[j]; a[j]=t }
    return (n%2) ? a[(n+1)/2] : (a[n/2]+a[n/2+1])/2 }
function mn(s,  n,a,i,m){n=split(s,a," ");m=a[1];for(i=2;i<=n;i++)if(a[i]+0<m+0)m=a[i];return m}
function mx(s,  n,a,i,m){n=split(s,a," ");m=a[1];for(i=2;i<=n;i++)if(a[i]+0>m+0)m=a[i];return m}
/^#/ || $1=="path" { next }
{ k=$1 SUBSEP $2 SUBSEP $4; if (!(k in seen)) { seen[k]=1; order[++n]=k }
  rps[k]=rps[k] " " $5; p50[k]=p50[k] " " $6; p99[k]=p99[k] " " $7; cpu[k]=cpu[k] " " $10; if ($9 != "0") err[k]=err[k] $9 }
END {
  printf "%-5s %5s %-18s %9s %15s %7s %7s %9s %8s %8s %10s\n", "path", "conns", "target", "req/s", "min-max", "p50_ms", "p99_ms", "cpu_us/rq", "/direct", "/nginx", "us_over_hyper"
  for (i=1;i<=n;i++) { k=order[i]; split(k, f, SUBSEP)
    d=f[1] SUBSEP f[2] SUBSEP "direct"; g=f[1] SUBSEP f[2] SUBSEP "nginx"; h=f[1] SUBSEP f[2] SUBSEP "hyper"
    if (f[3] ~ /-log$/ && (f[1] SUBSEP f[2] SUBSEP "nginx-log") in seen) g=f[1] SUBSEP f[2] SUBSEP "nginx-log"
    if (f[3] ~ /-3$/ && (f[1] SUBSEP f[2] SUBSEP "nginx-3") in seen) g=f[1] SUBSEP f[2] SUBSEP "nginx-3"
    r=median(rps[k]); rd=(d in seen)?median(rps[d]):0; rg=(g in seen)?median(rps[g]):0
    over="-"; if ((h in seen) && f[3] ~ /^gateway/) over=sprintf("%+.2f", median(cpu[k])-median(cpu[h]))
    printf "%-5s %5s %-18s %9.0f %15s %7.3f %7.3f %9.2f %8s %8s %10s%s\n", f[1], f[2], f[3], r, sprintf("%.0f-%.0f", mn(rps[k]), mx(rps[k])),
      median(p50[k]), median(p99[k]), median(cpu[k]), (rd>0)?sprintf("%.3f", r/rd):"-", (rg>0)?sprintf("%.3f", r/rg):"-", over, (k in err)?"  ERRORS: " err[k]:"" }
  print ""
  print "medians of the repetitions; ratios = target median req/s / direct or nginx median req/s (same run)"
  print "-log targets have their access log on; their /nginx is against nginx-log when it ran"
  print "-3 targets spread over three upstream ports (one version with 3 endpoints; nginx: an upstream block of 3); their /nginx is against nginx-3"
  print "cpu_us/rq = user+sys CPU of the proxy process per request (direct: none); us_over_hyper = gateway cpu - bare hyper peer cpu"
}' "$TSV" | tee "$OUT/summary.txt"

if [ "$H2" = 1 ]; then
    echo; echo "h2load, h2c prior knowledge, -c32 -m10, ${DURATION%s} s (front h2c, back HTTP/1.1 keepalive):"
    for t in nginx gateway; do
        port=$NGINX_H2C_PORT; hdr="x-bench: 1"
        [ "$t" = gateway ] && { port=$GATEWAY_PORT; hdr="$(hdr_of gateway)"; }
        h2load -t1 -c32 -m10 -D "${DURATION%s}" -H "$hdr" "http://127.0.0.1:$port/" > "$OUT/h2load_$t.txt" 2>&1 || true
        awk -v t="$t" '/^finished in/{gsub(/,/,""); r=$4} /^requests:/{gsub(/,/,""); ok=$8; bad=$10} /time for request:/{p=$0} END{printf "%-10s %9.0f req/s  succeeded=%s failed=%s  %s\n", t, r, ok, bad, p}' "$OUT/h2load_$t.txt"
    done | tee -a "$OUT/summary.txt"
fi
echo "raw: $OUT"
