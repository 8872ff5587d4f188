//! Load on loopback: how many saga-shaped call sequences (summary, hold, redeem, book) the
//! clients and simulators sustain together in one process, with latency percentiles.
//!
//! `cargo run --release -p como-workers --example loopback_load -- [SAGAS] [CONCURRENCY]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveTime, Utc};
use como_simulators::seed::{POINT_TYPE, VENUE_LARGE, bulk_member_no};
use como_simulators::{SimConfig, Simulators};
use como_workers::clients::memberson::{MembersonClient, MembersonSettings, RedeemRequest};
use como_workers::clients::sevenrooms::{
    BookRequest, HoldRequest, SevenRoomsClient, SevenRoomsSettings,
};
use como_workers::clients::{Deadline, Outcome};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let sagas: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let members = 1000;
    let sim = Simulators::start(SimConfig {
        bulk_members: members,
        ..SimConfig::default()
    })
    .await?;
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let memberson = MembersonClient::connect(
        http.clone(),
        MembersonSettings::new(sim.memberson_url(), sim.memberson_credentials().clone()),
    );
    let sevenrooms = SevenRoomsClient::connect(
        http,
        SevenRoomsSettings::new(sim.sevenrooms_url(), sim.sevenrooms_credentials().clone()),
    );
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (memberson, sevenrooms, next) =
                (memberson.clone(), sevenrooms.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut failures = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= sagas {
                        return (latencies, failures);
                    }
                    let t = Instant::now();
                    let ok = one_saga(&memberson, &sevenrooms, i, members).await;
                    latencies.push(t.elapsed());
                    failures += usize::from(!ok);
                }
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(sagas);
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await?;
        latencies.extend(l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
    println!(
        "{sagas} saga call sequences (4 calls each), concurrency {concurrency}: {:.0} sequences/s, {:.0} calls/s; per sequence p50 {:?} p99 {:?}; failures {failures}",
        sagas as f64 / elapsed.as_secs_f64(),
        4.0 * sagas as f64 / elapsed.as_secs_f64(),
        pct(0.5),
        pct(0.99),
    );
    sim.shutdown().await?;
    Ok(())
}

async fn one_saga(m: &MembersonClient, s: &SevenRoomsClient, i: usize, members: usize) -> bool {
    let deadline = Deadline::after(Duration::from_secs(30));
    let member = bulk_member_no(i % members);
    // 8 dinner slots a day, 100 sequences a day: far from the 200 covers of a slot.
    let date = Utc::now().date_naive() + chrono::Duration::days(1 + (i / 100) as i64);
    let time = NaiveTime::from_hms_opt(18 + (i % 4) as u32, 30 * (i / 4 % 2) as u32, 0)
        .unwrap_or(NaiveTime::MIN);
    if !m.member_summary(&member, deadline).await.is_success() {
        return false;
    }
    let hold = HoldRequest {
        date,
        time,
        party_size: 2,
        shift_persistent_id: None,
        access_persistent_id: None,
        hold_wait_time_sec: None,
    };
    let Outcome::Success(hold) = s.hold(VENUE_LARGE, &hold, deadline).await else {
        return false;
    };
    let redeem = RedeemRequest {
        member_no: member.clone(),
        point_type: POINT_TYPE.to_owned(),
        amount: 100,
        transaction_date: Utc::now(),
        location: "load".to_owned(),
        redemption_code: "LOAD".to_owned(),
        description: "load".to_owned(),
        receipt_no: format!("load-{i}"),
    };
    if !m.redeem(&redeem, deadline).await.is_success() {
        return false;
    }
    let book = BookRequest {
        date,
        time,
        party_size: 2,
        first_name: "Load".to_owned(),
        last_name: "Test".to_owned(),
        phone: "+6590000000".to_owned(),
        email: None,
        reservation_hold_id: Some(hold.reservation_hold_id),
        external_id: Some(format!("load-{i}")),
        loyalty_id: Some(member),
        notes: None,
    };
    s.book(VENUE_LARGE, &book, deadline).await.is_success()
}
