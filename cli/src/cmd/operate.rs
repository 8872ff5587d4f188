//! `como-saga sagas ...` and `como-saga dlq ...`: the operator's tools, through the HTTP API
//! (`--api URL` or `COMO_SAGA_API`; the token from `COMO_SAGA_TOKEN` or `--token`). Tables for
//! people; `--json` prints only the API's JSON on stdout. Every action takes `--reason`, kept in
//! the saga's history with who acted (the token's user).
//!
//! Exit codes: 0 done; 1 the command failed (the API refused or could not be reached; the
//! message says why); 2 bad usage.

use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::stack;

/// How to reach the API.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiClientArgs {
    /// The API's base URL (`up` and `api` print it).
    #[arg(
        long,
        env = "COMO_SAGA_API",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        global = true
    )]
    pub api: String,
    /// A bearer token (`como-saga token --role operator` mints one locally).
    #[arg(long, env = "COMO_SAGA_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON only, on stdout.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum SagasCommand {
    /// Sagas by status, step, age, member, venue, start time, downstream, or retrying with
    /// errors; newest first.
    List {
        #[command(flatten)]
        filters: FilterArgs,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One saga with its history.
    Show { id: String },
    /// Send the pending attempt now, or resume a saga that needs an operator. Without an id,
    /// every saga the filters select: a dry run listing them unless --yes is given.
    Retry {
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Stop going forward and undo what was done. Without an id, every saga the filters
    /// select: a dry run listing them unless --yes is given.
    Compensate {
        id: Option<String>,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Undo what was done and end as cancelled.
    Cancel {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Declare the outcome after fixing things by hand.
    Resolve {
        id: String,
        #[arg(long, value_parser = ["confirmed", "compensated"])]
        outcome: String,
        #[arg(long)]
        reason: String,
    },
}

/// Which sagas to list or act on.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct FilterArgs {
    /// Only sagas in this status: running, waiting_for_downstream, reconciling, compensating,
    /// confirmed, compensated, cancelled or needs_operator.
    #[arg(long)]
    pub status: Option<String>,
    /// Only sagas at this step (check_credits, hold_slot, redeem_credits, book_experience,
    /// confirm).
    #[arg(long)]
    pub step: Option<String>,
    /// Only sagas unchanged for at least this long (30s, 10m, 2h).
    #[arg(long, value_name = "DUR")]
    pub older_than: Option<String>,
    /// Only this member's sagas.
    #[arg(long, value_name = "MEMBER_NO")]
    pub member: Option<String>,
    /// Only sagas at this venue.
    #[arg(long, value_name = "VENUE_ID")]
    pub venue: Option<String>,
    /// Only sagas started at or after this time (RFC 3339, e.g. 2026-12-04T18:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub started_from: Option<String>,
    /// Only sagas started before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub started_before: Option<String>,
    /// Only live sagas whose current command goes to this downstream: memberson or
    /// sevenrooms.
    #[arg(long)]
    pub downstream: Option<String>,
    /// Only live sagas retrying with errors (the current command failed at least once).
    #[arg(long)]
    pub retrying: bool,
}

impl FilterArgs {
    /// The filters given, as the API names them.
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs: Vec<(&'static str, String)> = [
            ("status", &self.status),
            ("step", &self.step),
            ("older_than", &self.older_than),
            ("member", &self.member),
            ("venue", &self.venue),
            ("started_from", &self.started_from),
            ("started_before", &self.started_before),
            ("downstream", &self.downstream),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect();
        if self.retrying {
            pairs.push(("retrying", "true".to_owned()));
        }
        pairs
    }
}

/// `?k=v&...`, encoded.
fn query_string(pairs: &[(&str, String)]) -> String {
    let mut url = reqwest::Url::parse("http://query.invalid/").expect("a fixed URL");
    url.query_pairs_mut()
        .extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    format!("?{}", url.query().unwrap_or(""))
}

/// Which sagas a bulk action selects, and whether to act.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BulkArgs {
    #[command(flatten)]
    pub filters: FilterArgs,
    /// At most this many sagas (up to 1000).
    #[arg(long)]
    pub limit: Option<usize>,
    /// List the sagas that would be acted on, and act on none (the default without --yes).
    #[arg(long, conflicts_with = "yes")]
    pub dry_run: bool,
    /// Act on exactly the listed sagas.
    #[arg(long)]
    pub yes: bool,
    /// At most this many sagas a second.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
}

impl BulkArgs {
    fn any_filter(&self) -> bool {
        !self.filters.pairs().is_empty()
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// The dead letters of a queue, with why each was set aside.
    List {
        /// requests, replies, commands-crm, commands-sevenrooms or notifications.
        #[arg(long, default_value = "requests")]
        queue: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// One dead letter: why it was set aside, and the message as it was sent.
    Show {
        /// Its message id (`dlq list` shows them).
        id: String,
        /// requests, replies, commands-crm, commands-sevenrooms or notifications.
        #[arg(long, default_value = "requests")]
        queue: String,
    },
    /// Put dead letters back on their queue: all of them, or those named with --id.
    Redrive {
        #[arg(long, default_value = "requests")]
        queue: String,
        /// Only this message (repeat for several).
        #[arg(long = "id", value_name = "MESSAGE_ID")]
        ids: Vec<String>,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct SagasArgs {
    #[command(subcommand)]
    pub command: SagasCommand,
    #[command(flatten)]
    pub client: ApiClientArgs,
}

#[derive(Debug, clap::Args)]
pub struct DlqArgs {
    #[command(subcommand)]
    pub command: DlqCommand,
    #[command(flatten)]
    pub client: ApiClientArgs,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn new(args: &ApiClientArgs) -> anyhow::Result<Client> {
        Client::for_role(args, "operator")
    }

    /// A client whose token should carry `role` (named in the hint when there is none).
    pub fn for_role(args: &ApiClientArgs, role: &str) -> anyhow::Result<Client> {
        let token = args.token.clone().filter(|t| !t.trim().is_empty()).with_context(|| {
            format!(
                "no token: set COMO_SAGA_TOKEN (locally: export COMO_SAGA_TOKEN=$(como-saga token --role {role}))"
            )
        })?;
        Ok(Client {
            http: reqwest::Client::new(),
            base: args.api.trim_end_matches('/').to_owned(),
            token,
        })
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(&b);
        }
        let response = request
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the API at {}: {e} (is `como-saga up` or `como-saga api` running? --api URL)", self.base))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| value.to_string());
        anyhow::bail!("the API refused ({}): {message}", status.as_u16())
    }
}

pub fn run_sagas(args: SagasArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    stack::runtime()?.block_on(async move {
        match args.command {
            SagasCommand::List { filters, limit } => {
                let mut pairs = filters.pairs();
                pairs.push(("limit", limit.to_string()));
                let page = client
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/sagas{}", query_string(&pairs)),
                        None,
                    )
                    .await?;
                if json {
                    println!("{page}");
                } else {
                    print_sagas(&page);
                }
            }
            SagasCommand::Show { id } => {
                let saga = client
                    .call(reqwest::Method::GET, &format!("/v1/sagas/{id}"), None)
                    .await?;
                let history = all_history(&client, &id).await?;
                if json {
                    println!("{}", json!({"saga": saga, "history": history}));
                } else {
                    print_saga(&saga, &history);
                }
            }
            SagasCommand::Retry { id, reason, bulk } => {
                one_or_bulk(&client, id, "retry_now", &reason, &bulk, json).await?;
            }
            SagasCommand::Compensate { id, reason, bulk } => {
                one_or_bulk(&client, id, "force_compensation", &reason, &bulk, json).await?;
            }
            SagasCommand::Cancel { id, reason } => {
                act(
                    &client,
                    &id,
                    json!({"action": "cancel", "reason": reason}),
                    json,
                )
                .await?
            }
            SagasCommand::Resolve {
                id,
                outcome,
                reason,
            } => {
                act(
                    &client,
                    &id,
                    json!({"action": "resolve", "outcome": outcome, "reason": reason}),
                    json,
                )
                .await?
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_dlq(args: DlqArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let json = args.client.json;
    stack::runtime()?.block_on(async move {
        match args.command {
            DlqCommand::List { queue, limit } => {
                let page = client
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/dead-letters?queue={queue}&limit={limit}"),
                        None,
                    )
                    .await?;
                if json {
                    println!("{page}");
                } else {
                    let items = page["items"].as_array().cloned().unwrap_or_default();
                    println!("{} dead letters on {queue}", items.len());
                    for d in items {
                        println!(
                            "{}  {}  received {}x  {}",
                            d["message_id"].as_str().unwrap_or("-"),
                            d["dead_lettered_at"].as_str().unwrap_or("-"),
                            d["receive_count"],
                            d["reason"].as_str().unwrap_or("-")
                        );
                    }
                }
            }
            DlqCommand::Show { id, queue } => {
                // The API lists the oldest 500 at most; one beyond them is not found here.
                let page = client
                    .call(
                        reqwest::Method::GET,
                        &format!("/v1/dead-letters{}", query_string(&[("queue", queue.clone()), ("limit", "500".into())])),
                        None,
                    )
                    .await?;
                let found = page["items"]
                    .as_array()
                    .and_then(|items| items.iter().find(|d| d["message_id"] == id.as_str()))
                    .cloned()
                    .with_context(|| {
                        format!("no dead letter {id} on {queue} (among the 500 the API lists): `dlq list --queue {queue}` shows them")
                    })?;
                if json {
                    println!("{found}");
                } else {
                    println!("dead letter {id} on {queue}");
                    println!("  set aside: {}", text(&found["dead_lettered_at"]));
                    println!("  received:  {} times", found["receive_count"]);
                    println!("  why:       {}", text(&found["reason"]));
                    let body = found["body"].as_str().unwrap_or_default();
                    let pretty = serde_json::from_str::<Value>(body)
                        .and_then(|v| serde_json::to_string_pretty(&v))
                        .unwrap_or_else(|_| body.to_owned());
                    println!("  message:\n{pretty}");
                }
            }
            DlqCommand::Redrive { queue, ids, reason } => {
                let mut body = json!({"queue": queue, "reason": reason});
                if !ids.is_empty() {
                    body["message_ids"] = json!(ids);
                }
                let done = client
                    .call(
                        reqwest::Method::POST,
                        "/v1/dead-letters/redrive",
                        Some(body),
                    )
                    .await?;
                if json {
                    println!("{done}");
                } else {
                    println!("redrove {} dead letters onto {queue}", done["redriven"]);
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// One saga by id, or a bulk action by filter.
async fn one_or_bulk(
    client: &Client,
    id: Option<String>,
    action: &str,
    reason: &str,
    bulk: &BulkArgs,
    json: bool,
) -> anyhow::Result<()> {
    match id {
        Some(id) => {
            if bulk.any_filter() || bulk.yes {
                anyhow::bail!(
                    "give a saga id or filters (--status, --step, --older-than, ...), not both"
                );
            }
            act(
                client,
                &id,
                json!({"action": action, "reason": reason}),
                json,
            )
            .await
        }
        None => {
            if !bulk.any_filter() {
                anyhow::bail!(
                    "give a saga id, or filters (--status, --step, --older-than, ...) to act on many"
                );
            }
            run_bulk(client, action, reason, bulk, json).await
        }
    }
}

/// Preview, then (with --yes) act on exactly the previewed sagas, a few at a time, with a
/// progress bar on standard error.
async fn run_bulk(
    client: &Client,
    action: &str,
    reason: &str,
    bulk: &BulkArgs,
    json: bool,
) -> anyhow::Result<()> {
    let mut request = json!({"action": action});
    for (k, v) in bulk.filters.pairs() {
        request[k] = if k == "retrying" {
            json!(true)
        } else {
            json!(v)
        };
    }
    if let Some(limit) = bulk.limit {
        request["limit"] = json!(limit);
    }
    let preview = client
        .call(reqwest::Method::POST, "/v1/bulk/preview", Some(request))
        .await?;
    let sagas: Vec<String> = preview["sagas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["saga_id"].as_str().map(str::to_owned))
        .collect();
    if !bulk.yes {
        if json {
            println!("{preview}");
        } else {
            println!(
                "{} sagas would get {action} (dry run; --yes acts on exactly these):",
                sagas.len()
            );
            for s in preview["sagas"].as_array().cloned().unwrap_or_default() {
                println!(
                    "  {}  {:<24} {:<14} updated {}",
                    text(&s["saga_id"]),
                    text(&s["status"]),
                    text(&s["step"]),
                    text(&s["updated_at"])
                );
            }
        }
        return Ok(());
    }
    let token = preview["preview_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let bar = indicatif::ProgressBar::new(sagas.len() as u64);
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut results = Vec::new();
    let mut action_id = Value::Null;
    for chunk in sagas.chunks(10) {
        let done = client
            .call(
                reqwest::Method::POST,
                "/v1/bulk/execute",
                Some(json!({
                    "preview_token": token,
                    "reason": reason,
                    "saga_ids": chunk,
                    "rate_per_second": bulk.rate,
                })),
            )
            .await?;
        action_id = done["action_id"].clone();
        results.extend(done["results"].as_array().cloned().unwrap_or_default());
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            json!({"action": action, "action_id": action_id, "results": results})
        );
    } else {
        for r in &results {
            println!(
                "  {}  {:<10} now {}{}",
                text(&r["saga_id"]),
                text(&r["result"]),
                text(&r["status_after"]),
                r["message"]
                    .as_str()
                    .map(|m| format!("  ({m})"))
                    .unwrap_or_default()
            );
        }
        let applied = results.iter().filter(|r| r["result"] == "applied").count();
        println!(
            "{action} applied to {applied} of {} sagas (action {})",
            results.len(),
            text(&action_id)
        );
    }
    Ok(())
}

async fn act(client: &Client, id: &str, body: Value, json: bool) -> anyhow::Result<()> {
    let done = client
        .call(
            reqwest::Method::POST,
            &format!("/v1/sagas/{id}/actions"),
            Some(body),
        )
        .await?;
    if json {
        println!("{done}");
    } else if done["repeated"] == true {
        println!(
            "saga {id}: {} was applied before (action {}); it is {} now",
            done["action"].as_str().unwrap_or("-"),
            done["action_id"].as_str().unwrap_or("-"),
            done["status"].as_str().unwrap_or("-")
        );
    } else {
        println!(
            "saga {id}: {} applied (action {}); it is {} now (version {})",
            done["action"].as_str().unwrap_or("-"),
            done["action_id"].as_str().unwrap_or("-"),
            done["status"].as_str().unwrap_or("-"),
            done["version"]
        );
    }
    Ok(())
}

async fn all_history(client: &Client, id: &str) -> anyhow::Result<Vec<Value>> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sagas/{id}/history?limit=500&cursor={c}"),
            None => format!("/v1/sagas/{id}/history?limit=500"),
        };
        let page = client.call(reqwest::Method::GET, &path, None).await?;
        entries.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(entries),
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_sagas(page: &Value) {
    let items = page["items"].as_array().cloned().unwrap_or_default();
    println!(
        "{:<36}  {:<24}  {:<14}  {:<24}  request",
        "saga", "status", "step", "updated"
    );
    for s in &items {
        let status = match &s["status"] {
            Value::String(k) => k.clone(),
            Value::Object(o) => o.keys().next().cloned().unwrap_or_default(),
            other => text(other),
        };
        println!(
            "{:<36}  {:<24}  {:<14}  {:<24}  {}",
            text(&s["saga_id"]),
            status,
            text(&s["step"]),
            text(&s["updated_at"]),
            text(&s["request_id"])
        );
        if s["retrying"] == Value::Bool(true) {
            println!(
                "{:<38}retrying: {} attempt {} to {}; last error: {}",
                "",
                text(&s["command"]),
                s["attempt"],
                text(&s["downstream"]),
                text(&s["last_error"])
            );
        }
    }
    if let Some(next) = page["next_cursor"].as_str() {
        println!("(more: the API's cursor is {next})");
    }
}

fn print_saga(saga: &Value, history: &[Value]) {
    println!("saga {}", text(&saga["saga_id"]));
    println!("  status:   {}", saga["status"]);
    println!(
        "  request:  {} (member {}, venue {}, {} {}, party {}, {} credits)",
        text(&saga["request"]["request_id"]),
        text(&saga["request"]["member_no"]),
        text(&saga["request"]["venue_id"]),
        text(&saga["request"]["date"]),
        text(&saga["request"]["time"]),
        text(&saga["request"]["party_size"]),
        text(&saga["request"]["credits"])
    );
    println!(
        "  started:  {}   updated: {}   deadline: {}",
        text(&saga["started_at"]),
        text(&saga["updated_at"]),
        text(&saga["deadline"])
    );
    for step in saga["steps"].as_array().cloned().unwrap_or_default() {
        let error = match &step["last_error"] {
            Value::String(e) => format!("  last error: {e}"),
            _ => String::new(),
        };
        println!(
            "  step {:<14} {:<12} effect {:<10} attempts {}{error}",
            text(&step["name"]),
            text(&step["state"]),
            text(&step["effect"]),
            step["attempts"]["action"]["sent"]
        );
    }
    println!("history ({} entries):", history.len());
    for h in history {
        let mut line = format!(
            "  {}  {:<22} {:<14}",
            text(&h["at"]),
            text(&h["kind"]),
            text(&h["step"])
        );
        for key in ["detail", "error", "code", "operator", "reason"] {
            if let Some(v) = h[key].as_str() {
                line.push_str(&format!("  {key}: {v}"));
            }
        }
        println!("{line}");
    }
}

/// `como-saga experiences`: what a member sees before paying, through the API (a submitter's
/// token): the venues bookable with credits, or one venue's availability.
#[derive(Debug, clap::Args)]
pub struct ExperiencesArgs {
    /// A venue: show its availability (with --date and --party); without one, list the venues.
    pub venue: Option<String>,
    /// The day, YYYY-MM-DD.
    #[arg(long, requires = "venue")]
    pub date: Option<String>,
    /// Guests.
    #[arg(long, requires = "venue", default_value_t = 2)]
    pub party: u32,
    #[command(flatten)]
    pub client: ApiClientArgs,
}

pub fn run_experiences(args: ExperiencesArgs) -> anyhow::Result<ExitCode> {
    let client = Client::for_role(&args.client, "submitter")?;
    let json = args.client.json;
    stack::runtime()?.block_on(async move {
        let Some(venue) = &args.venue else {
            let list = client
                .call(reqwest::Method::GET, "/v1/experiences", None)
                .await?;
            if json {
                println!("{list}");
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<28} {:<40} {:>13}  details",
                "venue", "name", "credits/guest"
            );
            for e in list["experiences"].as_array().into_iter().flatten() {
                let details = match &e["details"] {
                    Value::Null => "never read (SevenRooms unavailable)".to_owned(),
                    d if d["stale"] == true => {
                        format!("STALE, {} s old", d["age_seconds"])
                    }
                    d => format!("{} s old", d["age_seconds"]),
                };
                println!(
                    "{:<28} {:<40} {:>13}  {details}",
                    text(&e["venue_id"]),
                    text(&e["name"]),
                    text(&e["credits_per_guest"]),
                );
            }
            return Ok(ExitCode::SUCCESS);
        };
        let date = args
            .date
            .clone()
            .context("--date YYYY-MM-DD is needed with a venue")?;
        let view = client
            .call(
                reqwest::Method::GET,
                &format!(
                    "/v1/experiences/{venue}/availability{}",
                    query_string(&[("date", date), ("party_size", args.party.to_string())])
                ),
                None,
            )
            .await?;
        if json {
            println!("{view}");
            return Ok(ExitCode::SUCCESS);
        }
        println!(
            "{venue} on {} for {}: {} credits ({} per guest){}",
            text(&view["date"]),
            text(&view["party_size"]),
            text(&view["credits"]),
            text(&view["credits_per_guest"]),
            match view["stale"] == true {
                true => format!(
                    ", STALE: read {} s ago ({})",
                    view["age_seconds"],
                    text(&view["stale_reason"])
                ),
                false => String::new(),
            }
        );
        for shift in view["shifts"].as_array().into_iter().flatten() {
            let times: Vec<String> = shift["times"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| match t["bookable"] == true {
                    true => text(&t["time"]),
                    false => format!("({})", text(&t["time"])),
                })
                .collect();
            println!("  {:<10} {}", text(&shift["name"]), times.join(" "));
        }
        println!("availability_id: {}", text(&view["availability_id"]));
        Ok(ExitCode::SUCCESS)
    })
}
