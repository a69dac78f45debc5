#!/bin/bash
# On the GPU machine: wait up to SECONDS for every started group, then copy results to $OUT.
end=$((SECONDS + ${1:-560}))
while [ $SECONDS -lt $end ]; do
    n_log=$(ls /tmp/proxy/*.log | wc -l)
    n_res=$(ls /tmp/proxy/*.json 2>/dev/null | wc -l)
    [ "$n_res" -ge "$n_log" ] && break
    sleep 10
done
tail -n 2 /tmp/proxy/*.log
cp /tmp/proxy/* "${OUT:-.}/" 2>/dev/null
true
