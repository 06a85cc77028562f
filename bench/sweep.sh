#!/usr/bin/env bash
# Repeats the throughput scenarios (max, target) for a few ingest settings, to separate real
# effects from the noise of a small shared machine. Run from the workspace root:
#   pg_virtualenv -v 15 -- bench/sweep.sh 3 > bench/results/sweep.md
# Every report is kept in full; the summary table at the end gives the medians.
set -euo pipefail
reps=${1:-3}
bench=target/release/parkd-bench
cargo build --release -p parkd-bench >&2
configs=(
    "--store postgres --batch-size 5000"
    "--store postgres --batch-size 20000"
    "--store postgres --batch-size 5000 --ingest-shards 2"
    "--store sqlite --batch-size 5000"
    "--store sqlite --batch-size 20000"
)
echo "# Ingest throughput sweep ($reps repetitions)"
echo
echo "Command: \`pg_virtualenv -v 15 -- bench/sweep.sh $reps\`; each line below runs"
echo "\`$bench --scenario max --scenario target --skip-raw <settings>\`."
summary=$(mktemp)
for config in "${configs[@]}"; do
    for rep in $(seq 1 "$reps"); do
        echo >&2 "sweep: $config (run $rep)"
        # shellcheck disable=SC2086
        report=$($bench --scenario max --scenario target --skip-raw $config 2>/dev/null)
        echo
        echo "## \`$config\`, run $rep"
        echo
        sed -n '/^## Summary/,/^### /p' <<<"$report" | grep '^|' | tail -n +3
        for scenario in max target; do
            line=$(grep -E "^\| [a-z]+ \| $scenario \|" <<<"$report" | head -1)
            rate=$(awk -F'|' '{gsub(/[ ,]/, "", $7); print $7}' <<<"$line")
            lost=$(awk -F'|' '{gsub(/[ ,]/, "", $6); print $6}' <<<"$line")
            echo "$config|$scenario|$rate|$lost" >>"$summary"
        done
    done
done
echo
echo "## Medians"
echo
echo "| Settings | Scenario | Throughput runs (msg/s) | Median | Lost per run |"
echo "|---|---|---|---:|---|"
for config in "${configs[@]}"; do
    for scenario in max target; do
        rates=$(grep -F -e "$config|$scenario|" "$summary" | cut -d'|' -f3 | sort -n | paste -sd' ')
        losts=$(grep -F -e "$config|$scenario|" "$summary" | cut -d'|' -f4 | paste -sd' ')
        median=$(tr ' ' '\n' <<<"$rates" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
        echo "| \`$config\` | $scenario | $rates | $median | $losts |"
    done
done
rm -f "$summary"
