//! `como-saga venues`: the venue catalogue kept in the store (see
//! `como_orchestrator::catalogue`): each venue's price in Como Credits and its SevenRooms
//! settings. A change reaches the orchestrator, the API and the SevenRooms worker within a few
//! seconds, without a restart. It works on the store directly (the embedded file, or the AWS
//! deployment's table), as `infra bootstrap` does: it is a deployment's administration, not an
//! operator's action on a saga.

use std::process::ExitCode;

use como_orchestrator::catalogue::{self, StoredCatalogue, VenueSettings};
use como_schemas::InvalidInput;

use crate::settings::{CommonArgs, DownstreamArgs, Settings};
use crate::stack;

#[derive(Debug, clap::Subcommand)]
pub enum VenuesCommand {
    /// The venues bookable with Como Credits, with their prices and SevenRooms settings.
    List(ListArgs),
    /// Add a venue, or change one: only the settings given change (a new venue needs
    /// --credits-per-guest).
    Set(SetArgs),
    /// Stop selling a venue for credits (sagas already past intake finish as they are, at the
    /// SevenRooms API their hold was made at).
    Remove(RemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the stored catalogue as one JSON object (`version`, `venues`).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The SevenRooms venue id.
    pub venue: String,
    /// The price per guest in Como Credits (every booking pays this, whatever a client quotes).
    #[arg(long, value_name = "N")]
    pub credits_per_guest: Option<u64>,
    /// The SevenRooms venue group (its details are read by group).
    #[arg(long, value_name = "ID")]
    pub venue_group: Option<String>,
    /// This venue's SevenRooms API base URL, when not the deployment's (empty: the deployment's).
    #[arg(long, value_name = "URL")]
    pub api_url: Option<String>,
    /// A shift sold for credits, by name or persistent id (repeat for several; once with an
    /// empty value: every shift).
    #[arg(long = "credit-shift", value_name = "SHIFT")]
    pub credit_shifts: Vec<String>,
    /// Print the stored catalogue as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    /// The SevenRooms venue id.
    pub venue: String,
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(command: VenuesCommand) -> anyhow::Result<ExitCode> {
    let common = match &command {
        VenuesCommand::List(a) => &a.common,
        VenuesCommand::Set(a) => &a.common,
        VenuesCommand::Remove(a) => &a.common,
    };
    let settings = Settings::load(common, &DownstreamArgs::default())?;
    stack::runtime()?.block_on(async move {
        crate::aws_credentials::check(&settings).await?;
        let backend = stack::open_backend(&settings)?;
        let result = act(&command, backend.ports.records.as_ref()).await;
        backend.close().await;
        result
    })
}

async fn act(
    command: &VenuesCommand,
    records: &dyn como_ports::IdempotencyRecords,
) -> anyhow::Result<ExitCode> {
    match command {
        VenuesCommand::List(a) => {
            let stored = catalogue::load(records).await?;
            match (stored, a.json) {
                (Some(s), true) => println!("{}", serde_json::to_string(&s)?),
                (None, true) => println!("{}", serde_json::to_string(&StoredCatalogue::default())?),
                (Some(s), false) => print_catalogue(&s),
                (None, false) => println!(
                    "no venue catalogue in the store yet: the orchestrator seeds it from COMO_SAGA_VENUES (or the settings file's [venues]) at its first start, or add venues with `como-saga venues set`"
                ),
            }
            Ok(ExitCode::SUCCESS)
        }
        VenuesCommand::Set(a) => {
            let changed = catalogue::update(records, |venues| set(venues, a)).await?;
            finish(changed, a.json, &format!("venue {} set", a.venue))
        }
        VenuesCommand::Remove(a) => {
            let changed = catalogue::update(records, |venues| match venues.remove(&a.venue) {
                true => Ok(()),
                false => Err(InvalidInput::new(
                    "venue",
                    format!("{} is not in the venue catalogue", a.venue),
                )),
            })
            .await?;
            finish(changed, a.json, &format!("venue {} removed", a.venue))
        }
    }
}

fn set(venues: &mut catalogue::VenueCatalogue, a: &SetArgs) -> Result<(), InvalidInput> {
    if let Err(e) = como_schemas::VenueId::parse(&a.venue) {
        return Err(InvalidInput::new("venue", format!("{:?}: {e}", a.venue)));
    }
    let mut settings = match (venues.get(&a.venue), a.credits_per_guest) {
        (Some(existing), _) => existing.clone(),
        (None, Some(n)) => VenueSettings::priced(n),
        (None, None) => {
            return Err(InvalidInput::new(
                "credits_per_guest",
                format!(
                    "{} is a new venue: give its price with --credits-per-guest",
                    a.venue
                ),
            ));
        }
    };
    if let Some(n) = a.credits_per_guest {
        settings.credits_per_guest = n;
    }
    if let Some(g) = &a.venue_group {
        settings.venue_group_id = Some(g.clone()).filter(|g| !g.is_empty());
    }
    if let Some(u) = &a.api_url {
        settings.api_url = Some(u.clone()).filter(|u| !u.is_empty());
    }
    if !a.credit_shifts.is_empty() {
        settings.credit_shifts = a
            .credit_shifts
            .iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
    }
    settings.validate()?;
    venues.set(a.venue.clone(), settings);
    Ok(())
}

fn finish(
    changed: Result<StoredCatalogue, InvalidInput>,
    json: bool,
    what: &str,
) -> anyhow::Result<ExitCode> {
    match changed {
        Ok(stored) if json => println!("{}", serde_json::to_string(&stored)?),
        Ok(stored) => {
            println!("{what} (catalogue version {})", stored.version);
            print_catalogue(&stored);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_catalogue(stored: &StoredCatalogue) {
    println!(
        "{:<32} {:>17}  {:<20} {:<14} api",
        "venue", "credits/guest", "venue group", "credit shifts"
    );
    for (id, v) in stored.venues.venues() {
        let shifts = match v.credit_shifts.is_empty() {
            true => "all".to_owned(),
            false => v.credit_shifts.join(","),
        };
        println!(
            "{id:<32} {:>17}  {:<20} {shifts:<14} {}",
            v.credits_per_guest,
            v.venue_group_id.as_deref().unwrap_or("-"),
            v.api_url.as_deref().unwrap_or("the deployment's"),
        );
    }
}
