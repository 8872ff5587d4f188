//! `como-saga api`: the operator and monitoring HTTP API as its own process, against the
//! backend named by configuration. Tokens are checked against a JWKS (`--jwks FILE|URL`, with
//! `--issuer` and `--audience`, as Amazon Cognito issues them); without one, against the local
//! signing key next to the database (local use only: `como-saga token` mints with it).

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use como_api::auth::AuthConfig;
use como_app::App;
use tokio_util::sync::CancellationToken;

use crate::settings::{CommonArgs, DownstreamArgs, Required, Settings};
use crate::stack;

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The address to serve on (port 0: any free port; the address is printed).
    #[arg(long, env = "COMO_SAGA_API_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[command(flatten)]
    pub tokens: TokenArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Where the API's tokens come from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// The key set that signs the tokens: a JSON file, or an http(s) URL such as Cognito's
    /// `https://cognito-idp.<region>.amazonaws.com/<pool>/.well-known/jwks.json`. Without it,
    /// the local signing key next to the database (local use only).
    #[arg(long, env = "COMO_SAGA_JWKS", value_name = "FILE|URL")]
    pub jwks: Option<String>,
    /// The tokens' issuer (`iss`), with --jwks.
    #[arg(long, env = "COMO_SAGA_JWT_ISSUER", requires = "jwks")]
    pub issuer: Option<String>,
    /// The tokens' audience (`aud`, or Cognito's `client_id`), with --jwks.
    #[arg(long, env = "COMO_SAGA_JWT_AUDIENCE", requires = "jwks")]
    pub audience: Option<String>,
}

pub fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let mut settings = Settings::load_for_role(
        "api",
        &args.common,
        &DownstreamArgs::default(),
        &[Required::Venues],
    )?;
    // Viewing experiences reads SevenRooms: with its URL, its real credentials too.
    if settings.sevenrooms.base_url.is_some() {
        settings = Settings::load_for_role(
            "api",
            &args.common,
            &DownstreamArgs::default(),
            &[Required::Venues, Required::SevenRoomsCredentials],
        )?;
    }
    stack::runtime()?.block_on(async {
        let app = crate::aws_credentials::open_app(settings)
            .await?
            .with_data_keys()
            .await?;
        let auth = auth_config(&app, &args.tokens).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let address = listener.local_addr()?;
        println!("api: http://{address} (OpenAPI: http://{address}/openapi.json)");
        println!("dashboard: http://{address}/dashboard/");
        let shutdown = CancellationToken::new();
        stack::cancel_on_signal(shutdown.clone());
        let served = app.serve_api(listener, &auth, None, &shutdown)?;
        super::health::heartbeat("api", &shutdown);
        let result = served.await;
        app.close().await;
        result.context("the API stopped abnormally")??;
        println!("api: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// The key set, issuer and audience the API checks tokens with.
pub async fn auth_config(app: &App, args: &TokenArgs) -> anyhow::Result<AuthConfig> {
    let Some(source) = &args.jwks else {
        let key = app.local_key()?;
        eprintln!(
            "api: checking tokens with the local signing key {} (local use only; `como-saga token --role R` mints one)",
            como_app::local_key_path(app.settings()).display()
        );
        return Ok(key.auth_config());
    };
    let text = if source.starts_with("http://") || source.starts_with("https://") {
        reqwest::get(source)
            .await
            .and_then(|r| r.error_for_status())
            .with_context(|| format!("cannot fetch the key set {source}"))?
            .text()
            .await
            .with_context(|| format!("cannot read the key set {source}"))?
    } else {
        std::fs::read_to_string(source)
            .with_context(|| format!("cannot read the key set {source}"))?
    };
    let keys = serde_json::from_str(&text)
        .with_context(|| format!("{source} is not a JSON Web Key Set"))?;
    Ok(AuthConfig {
        issuer: args
            .issuer
            .clone()
            .context("--issuer (COMO_SAGA_JWT_ISSUER) is needed with --jwks")?,
        audience: args
            .audience
            .clone()
            .context("--audience (COMO_SAGA_JWT_AUDIENCE) is needed with --jwks")?,
        keys,
    })
}
