#!/usr/bin/env bash
# Captures the simulators' real answers as seeds of the client fuzz targets, in the targets'
# input form (`STATUS [shape]`, the Retry-After value or `-`, then the body; see src/lib.rs).
#
#   fuzz/seeds/capture.sh [path/to/como-saga]     (default: cargo run from the repository)
#
# Needs curl. Overwrites the `memberson_*` and `sevenrooms_*` seed directories' captured files.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${1:-}"
log="$(mktemp)"
if [[ -n "$bin" ]]; then
    "$bin" simulators --json --bulk-members 0 >"$log" 2>&1 &
else
    (cd "$root" && cargo run -q -- simulators --json --bulk-members 0) >"$log" 2>&1 &
fi
sim=$!
trap 'kill $sim 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 1 600); do
    grep -q memberson_url "$log" && break
    sleep 0.2
done
M="$(grep -o '"memberson_url": *"[^"]*"' "$log" | cut -d'"' -f4)"
S="$(grep -o '"sevenrooms_url": *"[^"]*"' "$log" | cut -d'"' -f4)"
[[ -n "$M" && -n "$S" ]] || { cat "$log"; exit 1; }

tmp="$(mktemp -d)"
# cap TARGET SHAPE NAME CURL-ARGS...: one answer, written as a seed.
cap() {
    local target=$1 shape=$2 name=$3
    shift 3
    local status ra
    status="$(curl -s -D "$tmp/h" -o "$tmp/b" -w '%{http_code}' "$@")"
    ra="$(grep -i '^retry-after:' "$tmp/h" | cut -d: -f2- | tr -d ' \r' || true)"
    mkdir -p "$here/$target"
    { printf '%s%s\n%s\n' "$status" "${shape:+ $shape}" "${ra:--}"; cat "$tmp/b"; } \
        >"$here/$target/$name"
}
json=(-H 'Content-Type: application/json')
faults() { curl -s -X PUT "${json[@]}" -d "$2" "$1/_sim/faults" >/dev/null; }
clear_faults() { curl -s -X DELETE "$1/_sim/faults" >/dev/null; }

# Memberson
svc='SvcAuth: Y29tby1zYWdh,c2ltdWxhdG9yLXNlY3JldA=='
creds='{"Username":"como-saga","Password":"simulator-secret"}'
cap memberson_token "" ok -X POST -H "$svc" "${json[@]}" -d "$creds" "$M/api/user/authenticate"
cap memberson_token "" wrong-password -X POST -H "$svc" "${json[@]}" \
    -d '{"Username":"como-saga","Password":"nope"}' "$M/api/user/authenticate"
cap memberson_token "" wrong-svc-auth -X POST -H 'SvcAuth: x' "${json[@]}" -d "$creds" \
    "$M/api/user/authenticate"
token="$(curl -s -X POST -H "$svc" "${json[@]}" -d "$creds" "$M/api/user/authenticate" | tr -d '"')"
auth=(-H "$svc" -H "Token: $token")
cap memberson_summary "" active "${auth[@]}" "$M/api/profile/CM100001/summary"
cap memberson_summary "" low-balance "${auth[@]}" "$M/api/profile/CM100004/summary"
cap memberson_summary "" expired "${auth[@]}" "$M/api/profile/CM100006/summary"
cap memberson_summary "" terminated "${auth[@]}" "$M/api/profile/CM100007/summary"
cap memberson_summary "" not-found "${auth[@]}" "$M/api/profile/CM999999/summary"
cap memberson_summary "" bad-token -H "$svc" -H 'Token: nope' "$M/api/profile/CM100001/summary"
faults "$M" '{"kind":"rate_limited","retry_after_secs":7}'
cap memberson_summary "" rate-limited "${auth[@]}" "$M/api/profile/CM100001/summary"
faults "$M" '{"kind":"server_error","status":503}'
cap memberson_summary "" unavailable "${auth[@]}" "$M/api/profile/CM100001/summary"
clear_faults "$M"

redeem() {
    printf '{"MemberNo":"%s","PointType":"COMO_CREDITS","Amount":%s,"TransactionDate":"2026-11-24T10:00:00Z","Location":"como-saga","RedemptionCode":"EXPERIENCE","Description":"Experience paid with Como Credits","ReceiptNo":"%s"}' "$1" "$2" "$3"
}
R="$M/api/transaction/redeem-point"
cap memberson_redeem "" redeemed "${auth[@]}" "${json[@]}" -d "$(redeem CM100001 1200 CS-seed-1)" "$R"
cap memberson_redeem "" replayed "${auth[@]}" "${json[@]}" -d "$(redeem CM100001 1200 CS-seed-1)" "$R"
cap memberson_redeem "" duplicate-receipt "${auth[@]}" "${json[@]}" \
    -d "$(redeem CM100001 1300 CS-seed-1)" "$R"
cap memberson_redeem "" insufficient "${auth[@]}" "${json[@]}" \
    -d "$(redeem CM100004 999999 CS-seed-2)" "$R"
cap memberson_redeem "" expired "${auth[@]}" "${json[@]}" -d "$(redeem CM100006 100 CS-seed-3)" "$R"
cap memberson_redeem "" not-found "${auth[@]}" "${json[@]}" -d "$(redeem CM999999 100 CS-seed-4)" "$R"
cap memberson_redeem "" invalid "${auth[@]}" "${json[@]}" -d '{"MemberNo":"CM100001"}' "$R"
faults "$M" '{"kind":"commit_then_fail","status":500,"ops":["redeem"]}'
cap memberson_redeem "" commit-then-fail "${auth[@]}" "${json[@]}" \
    -d "$(redeem CM100002 100 CS-seed-5)" "$R"
clear_faults "$M"

V="$M/api/transaction/void-redeem-point"
void() { printf '{"MemberNo":"%s","ReceiptNo":"%s","Reason":"booking did not go through"}' "$1" "$2"; }
cap memberson_void "" voided "${auth[@]}" "${json[@]}" -d "$(void CM100001 CS-seed-1)" "$V"
cap memberson_void "" already-voided "${auth[@]}" "${json[@]}" -d "$(void CM100001 CS-seed-1)" "$V"
cap memberson_void "" never-redeemed "${auth[@]}" "${json[@]}" -d "$(void CM100001 CS-none)" "$V"
faults "$M" '{"kind":"server_error","status":502,"ops":["void"]}'
cap memberson_void "" bad-gateway "${auth[@]}" "${json[@]}" -d "$(void CM100001 CS-seed-1)" "$V"
clear_faults "$M"

# SevenRooms
form=(--data-urlencode client_id=como-saga --data-urlencode client_secret=simulator-client-secret)
cap sevenrooms_token "" ok -X POST "${form[@]}" "$S/auth"
cap sevenrooms_token "" refused -X POST --data-urlencode client_id=como-saga \
    --data-urlencode client_secret=nope "$S/auth"
faults "$S" '{"kind":"rate_limited","retry_after_secs":2,"ops":["auth"]}'
cap sevenrooms_token "" rate-limited -X POST "${form[@]}" "$S/auth"
clear_faults "$S"
rtoken="$(curl -s -X POST "${form[@]}" "$S/auth" | grep -o '"token": *"[^"]*"' | cut -d'"' -f4)"
ra=(-H "Authorization: $rtoken")
venue=como-dempsey-candlenut
small=como-metropolitan-chefs-table
day="$(date -u -d '+30 days' +%F)"
cap sevenrooms_reads venues venues "${ra[@]}" "$S/venues?venue_group_id=como-hotels-and-resorts"
cap sevenrooms_reads availability availability "${ra[@]}" \
    "$S/venues/$venue/availability?date=$day&party_size=2&start_time=19:30&end_time=19:30"
cap sevenrooms_reads availability no-venue "${ra[@]}" \
    "$S/venues/nowhere/availability?date=$day&party_size=2"
cap sevenrooms_reads venues bad-token -H 'Authorization: nope' \
    "$S/venues?venue_group_id=como-hotels-and-resorts"

hold() {
    curl -s -D "$tmp/h" -o "$tmp/b" -w '%{http_code}' -X POST "${ra[@]}" \
        --data-urlencode "date=$day" --data-urlencode time=19:30 --data-urlencode party_size=2 \
        --data-urlencode hold_wait_time_sec=300 "$S/venues/$1/holds" >/dev/null
}
cap sevenrooms_hold "" held -X POST "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=2 "$S/venues/$venue/holds"
cap sevenrooms_hold "" bad-date -X POST "${ra[@]}" --data-urlencode date=2026-02-30 \
    --data-urlencode time=19:30 --data-urlencode party_size=2 "$S/venues/$venue/holds"
cap sevenrooms_hold "" no-venue -X POST "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=2 "$S/venues/nowhere/holds"
cap sevenrooms_hold "" slot-full -X POST "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=50 "$S/venues/$small/holds"
faults "$S" '{"kind":"server_error","status":500,"ops":["hold"]}'
cap sevenrooms_hold "" server-error -X POST "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=2 "$S/venues/$venue/holds"
clear_faults "$S"

hold_id="$(grep -o '"reservation_hold_id": *"[^"]*"' "$here/sevenrooms_hold/held" | cut -d'"' -f4)"
book=(-X PUT "${ra[@]}" --data-urlencode "date=$day" --data-urlencode time=19:30
    --data-urlencode party_size=2 --data-urlencode first_name=Mei --data-urlencode last_name=Tan
    --data-urlencode phone=+6591234567 --data-urlencode external_id=seed-saga-1
    --data-urlencode loyalty_id=CM100001)
cap sevenrooms_book "" booked "${book[@]}" --data-urlencode "reservation_hold_id=$hold_id" \
    "$S/venues/$venue/book"
cap sevenrooms_book "" same-external-id "${book[@]}" "$S/venues/$venue/book"
cap sevenrooms_book "" hold-expired -X PUT "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=2 --data-urlencode first_name=Mei \
    --data-urlencode last_name=Tan --data-urlencode phone=+6591234567 \
    --data-urlencode external_id=seed-saga-2 --data-urlencode reservation_hold_id=hold-none \
    "$S/venues/$venue/book"
cap sevenrooms_book "" bad-phone -X PUT "${ra[@]}" --data-urlencode "date=$day" \
    --data-urlencode time=19:30 --data-urlencode party_size=2 --data-urlencode first_name=Mei \
    --data-urlencode last_name=Tan --data-urlencode phone=12345 "$S/venues/$venue/book"
faults "$S" '{"kind":"commit_then_fail","status":502,"ops":["book"]}'
cap sevenrooms_book "" commit-then-fail "${book[@]}" --data-urlencode external_id=seed-saga-3 \
    "$S/venues/$venue/book"
clear_faults "$S"

res_id="$(grep -o '"reservation_id": *"[^"]*"' "$here/sevenrooms_book/booked" | cut -d'"' -f4)"
cap sevenrooms_reads reservation reservation "${ra[@]}" "$S/reservations/$res_id"
cap sevenrooms_reads reservation no-reservation "${ra[@]}" "$S/reservations/res-none"
cap sevenrooms_reads search search "${ra[@]}" \
    "$S/reservations?from_date=$day&to_date=$day&venue_id=$venue&limit=400"
cap sevenrooms_reads search search-empty "${ra[@]}" \
    "$S/reservations?from_date=2030-01-01&to_date=2030-01-01&venue_id=$venue&limit=400"

hold "$venue"
hold2="$(grep -o '"reservation_hold_id": *"[^"]*"' "$tmp/b" | cut -d'"' -f4)"
cap sevenrooms_release_cancel release released -X DELETE "${ra[@]}" "$S/venues/$venue/holds/$hold2"
cap sevenrooms_release_cancel release already-gone -X DELETE "${ra[@]}" \
    "$S/venues/$venue/holds/hold-none"
cap sevenrooms_release_cancel cancel cancelled -X DELETE "${ra[@]}" "$S/reservations/$res_id"
cap sevenrooms_release_cancel cancel already-cancelled -X DELETE "${ra[@]}" \
    "$S/reservations/$res_id"
cap sevenrooms_release_cancel cancel not-found -X DELETE "${ra[@]}" "$S/reservations/res-none"
faults "$S" '{"kind":"refuse","code":"PAST_CANCELLATION_CUTOFF","ops":["cancel"]}'
cap sevenrooms_release_cancel cancel past-cutoff -X DELETE "${ra[@]}" "$S/reservations/$res_id"
faults "$S" '{"kind":"outage","status":503}'
cap sevenrooms_release_cancel "" outage -X DELETE "${ra[@]}" "$S/reservations/$res_id"
clear_faults "$S"
rm -rf "$tmp"
echo "seeds written under $here"
