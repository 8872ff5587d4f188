//! A local moto server for tests (feature `moto`): installed on first use into a virtual
//! environment under the cargo target directory (`target/moto-venv`, `pip install
//! 'moto[server]'`, one install however many test processes ask at once, under a file lock),
//! and started once per test process on a free loopback port by `backends/aws/moto/serve.py`,
//! which mends a race in moto's SQS first. The server stops when the test process ends: the
//! script exits when its standard input closes.
//!
//! Nothing here talks to anything but 127.0.0.1 and, for the one-time install, the Python
//! package index that pip is configured with.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;

use crate::{AwsBackend, AwsConfig, ConnectError, bootstrap};

/// The script that serves moto, with its one mend (see the script: a race in moto's SQS that
/// can drop a message sent while another is deleted).
pub const MOTO_SERVE: &str = include_str!("../moto/serve.py");

/// The moto release line the tests are written against.
const MOTO: &str = "moto[server]>=5.1,<6";
const REGION: &str = "us-east-1";

/// A running moto server.
pub struct Moto {
    pub endpoint: String,
    _child: Child,
}

static MOTO_SERVER: OnceLock<Moto> = OnceLock::new();

/// The moto server of this test process, installed and started on first use. Panics if it
/// cannot be had: a test without its server cannot run.
pub fn moto() -> &'static Moto {
    MOTO_SERVER.get_or_init(|| start().unwrap_or_else(|e| panic!("cannot start moto: {e}")))
}

/// The cargo target directory this test binary was built into.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| {
            exe.ancestors()
                .find(|d| d.join("CACHEDIR.TAG").exists())
                .map(Path::to_path_buf)
        })
        .unwrap_or_else(std::env::temp_dir)
}

/// The virtual environment's Python, installing moto first if needed.
pub fn python() -> Result<PathBuf, String> {
    venv("moto-venv", MOTO)
}

/// A Python virtual environment `name` under the cargo target directory with `requirement`
/// installed (one install however many test processes ask at once, under a file lock);
/// returns its Python. The tests' tools (moto, schemathesis) come from here.
pub fn venv(name: &str, requirement: &str) -> Result<PathBuf, String> {
    let target = target_dir();
    std::fs::create_dir_all(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    let venv = target.join(name);
    let python = venv.join("bin").join("python");
    let done = venv.join(".como-installed");
    let lock_path = target.join(format!("{name}.lock"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("{}: {e}", lock_path.display()))?;
    // Held until the end of this function: one install, the others wait for it.
    lock.lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    if done.exists()
        && python.exists()
        && std::fs::read_to_string(&done).is_ok_and(|r| r == requirement)
    {
        return Ok(python);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", requirement]))?;
    std::fs::write(&done, requirement).map_err(|e| format!("{}: {e}", done.display()))?;
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Starts a moto server on a free loopback port.
fn start() -> Result<Moto, String> {
    let python = python()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let mut child = Command::new(&python)
        .args(["-c", MOTO_SERVE, "--port", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| format!("moto did not start: {e}"))?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("moto did not start: {line:?}"));
    }
    let endpoint = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("moto is not listening on {endpoint}"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Moto {
        endpoint,
        _child: child,
    })
}

/// The SDK configuration for the moto server: its endpoint, `us-east-1`, test credentials.
pub async fn sdk_config(endpoint: &str) -> SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(aws_config::Region::new(REGION))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "testing", "testing", None, None, "moto",
        ))
        .load()
        .await
}

/// A prefix no other test of this process or another uses.
pub fn unique_prefix(name: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let short: String = name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    format!(
        "t{}-{short}-{}-{n}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// A fresh deployment on this process's moto server: bootstrapped under a unique prefix and
/// connected.
pub async fn fresh(
    name: &str,
    mut config: AwsConfig,
) -> Result<(AwsBackend, SdkConfig), ConnectError> {
    config.prefix = unique_prefix(name);
    let endpoint = tokio::task::spawn_blocking(|| moto().endpoint.clone())
        .await
        .map_err(|e| ConnectError::Service(format!("moto: {e}")))?;
    let sdk = sdk_config(&endpoint).await;
    bootstrap::bootstrap(&sdk, &config, &[])
        .await
        .map_err(|e| ConnectError::Service(e.to_string()))?;
    let backend = AwsBackend::connect_with(&sdk, config).await?;
    Ok((backend, sdk))
}

/// A packed attribute's JSON as the table keeps it, inflated (for a test that reads the raw
/// items and must see through the compression, which hides nothing).
pub fn unpack(bytes: &[u8]) -> Option<Vec<u8>> {
    let blob = aws_sdk_dynamodb::types::AttributeValue::B(aws_sdk_dynamodb::primitives::Blob::new(
        bytes.to_vec(),
    ));
    crate::store::unpacked::<serde_json::Value>("a raw item's attribute", &blob)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
}
