//! The data keys a process holds, read from where the deployment keeps them, and read again:
//! on a schedule, and at once when a sealed value names a key this process has not seen (a
//! rotation made by another process), so that a new key is usable everywhere as soon as the
//! first value sealed with it arrives.
//!
//! Where the keys are kept ([`KeySource`]):
//! - the embedded backend: a key file beside the database (`como-saga.keys`, mode 0600, made
//!   on first start), or the keyring's text in `COMO_SAGA_DATA_KEYS`;
//! - AWS: a Secrets Manager secret (`<prefix>/data-keys`), made once by `como-saga keys init`.
//!
//! Never in the database itself: a copy of the database holds ciphertext only.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use como_ports::SecretStore;
use como_schemas::{Guest, GuestContact, SagaId, SealedGuest};

use crate::keyring::{Keyring, KeyringError, OpenError};

/// How often a process reads its keys again, beside the reads a new key id prompts. Rarely:
/// on AWS each read is a paid Secrets Manager call (and a KMS decrypt) per task, and a new key
/// reaches every process at once anyway, with the first value sealed with it.
pub const RELOAD_EVERY: Duration = Duration::from_secs(600);

/// The least time between two reads prompted by unknown key ids: a flood of values sealed
/// with a key nobody has does not become a flood of reads.
const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(1);

/// Where the data keys are kept.
#[derive(Clone)]
pub enum KeySource {
    /// A key file (the embedded backend's default: beside the database).
    File(PathBuf),
    /// The keyring's text, given to the process (`COMO_SAGA_DATA_KEYS`); it cannot be
    /// rotated from here.
    Text(String),
    /// A secret of the secret store (AWS: Secrets Manager).
    Secret {
        store: Arc<dyn SecretStore>,
        name: String,
    },
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Why the keys could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{source_name}: {error}")]
    Keyring {
        source_name: String,
        error: KeyringError,
    },
    #[error("{0}: no data keys there; {1}")]
    Missing(String, &'static str),
    #[error("{0}: {1}")]
    Io(String, String),
    #[error(
        "the data keys come from COMO_SAGA_DATA_KEYS: rotate them where that value is kept, then restart"
    )]
    Fixed,
    /// What is kept there changed while a write was being made: nothing was written.
    #[error("{0}")]
    Changed(String),
}

impl KeySource {
    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            KeySource::File(p) => format!("key file {}", p.display()),
            KeySource::Text(_) => "COMO_SAGA_DATA_KEYS".to_owned(),
            KeySource::Secret { name, .. } => format!("secret {name}"),
        }
    }

    fn parse(&self, text: &str) -> Result<Keyring, KeyError> {
        Keyring::parse(text).map_err(|error| KeyError::Keyring {
            source_name: self.describe(),
            error,
        })
    }

    /// The keyring kept there, if there is one.
    pub async fn read(&self) -> Result<Option<Keyring>, KeyError> {
        match self {
            KeySource::Text(text) => self.parse(text).map(Some),
            KeySource::File(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    warn_if_readable_by_others(path);
                    self.parse(&text).map(Some)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(KeyError::Io(self.describe(), e.to_string())),
            },
            KeySource::Secret { store, name } => match store.current(name).await {
                Ok(Some(v)) if !v.value.trim().is_empty() => self.parse(&v.value).map(Some),
                Ok(_) => Ok(None),
                Err(e) => Err(KeyError::Io(self.describe(), e.to_string())),
            },
        }
    }

    /// The keyring kept there, made (one new key) if there is none. Made at most once: a
    /// file is linked into place only if none is there, and whoever loses that race reads
    /// the winner's.
    pub async fn read_or_create(&self) -> Result<(Keyring, bool), KeyError> {
        if let Some(ring) = self.read().await? {
            return Ok((ring, false));
        }
        let ring = Keyring::generate();
        match self {
            KeySource::Text(_) => Err(KeyError::Fixed),
            KeySource::File(path) => {
                let created = write_file(path, &ring.to_text(), false)
                    .map_err(|e| KeyError::Io(self.describe(), e.to_string()))?;
                if created {
                    return Ok((ring, true));
                }
                let ring = self.read().await?.ok_or(KeyError::Missing(
                    self.describe(),
                    "it was made by another process and then removed",
                ))?;
                Ok((ring, false))
            }
            KeySource::Secret { .. } => match self.write_if(None, &ring).await {
                Ok(()) => Ok((ring, true)),
                // Made by another process meanwhile: theirs is the one.
                Err(KeyError::Changed(_)) => {
                    let ring = self.read().await?.ok_or(KeyError::Missing(
                        self.describe(),
                        "it was made by another process and then removed",
                    ))?;
                    Ok((ring, false))
                }
                Err(e) => Err(e),
            },
        }
    }

    /// Replace the keyring kept there with `ring` if what is kept there is still `expected`
    /// (none: nothing kept), so that two rotations at once never leave a key that sealed
    /// something behind: the second is refused ([`KeyError::Changed`]) and can run again. A
    /// file is replaced whole (written aside, then renamed) under a lock beside it; a secret
    /// gets a new current version, promoted only if the current one is still the expected.
    pub async fn write_if(
        &self,
        expected: Option<&Keyring>,
        ring: &Keyring,
    ) -> Result<(), KeyError> {
        let io = |e: String| KeyError::Io(self.describe(), e);
        let same =
            |now: Option<Keyring>| now.map(|k| k.to_text()) == expected.map(Keyring::to_text);
        let changed = || {
            KeyError::Changed(format!(
                "{} changed while this ran (another rotation?): run it again",
                self.describe()
            ))
        };
        match self {
            KeySource::Text(_) => Err(KeyError::Fixed),
            KeySource::File(path) => {
                // The owner's alone, like the key file: another account that could open it
                // could hold the lock and stall every rotation.
                use std::os::unix::fs::OpenOptionsExt;
                let lock = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .mode(0o600)
                    .open(path.with_extension("keys.lock"))
                    .map_err(|e| io(e.to_string()))?;
                lock.lock().map_err(|e| io(e.to_string()))?;
                if !same(self.read().await?) {
                    return Err(changed());
                }
                write_file(path, &ring.to_text(), true)
                    .map(|_| ())
                    .map_err(|e| io(e.to_string()))
            }
            KeySource::Secret { store, name } => {
                if !same(self.read().await?) {
                    return Err(changed());
                }
                let version = store
                    .put_pending(name, &ring.to_text())
                    .await
                    .map_err(|e| io(e.to_string()))?;
                if !same(self.read().await?) {
                    return Err(changed());
                }
                store
                    .promote(name, &version)
                    .await
                    .map_err(|e| io(e.to_string()))
            }
        }
    }
}

/// Write `text` to `path` with mode 0600: whole or not at all. With `replace`, over what is
/// there; without, only if nothing is (returns whether it wrote).
fn write_file(path: &Path, text: &str, replace: bool) -> std::io::Result<bool> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir)?;
    }
    let aside = path.with_extension(format!("keys-{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&aside)?;
    // The mode given to open is narrowed by the umask, never widened; this is exact.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    let placed = if replace {
        std::fs::rename(&aside, path).map(|()| true)
    } else {
        // A hard link fails if the name is taken: made at most once, whatever the race.
        let linked = match std::fs::hard_link(&aside, path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        };
        let _ = std::fs::remove_file(&aside);
        linked
    };
    if placed.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    if let Some(dir) = dir
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    placed
}

/// Warns (once per path and process) when a key file can be read by others than its owner.
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    let mut warned = WARNED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if warned.iter().any(|p| p == path) {
        return;
    }
    warned.push(path.to_owned());
    tracing::warn!(
        path = %path.display(),
        mode = format!("{mode:03o}"),
        "the data key file can be read by other accounts: it opens every guest's contact; fix with chmod 600 {}",
        path.display()
    );
}

/// The data keys of this process.
pub struct Keys {
    ring: ArcSwap<Keyring>,
    source: KeySource,
    /// Held while a read prompted by an unknown key id is under way, with when the last one
    /// ended: one read at a time, and the callers that waited see what it found.
    last_prompted: tokio::sync::Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("source", &self.source.describe())
            .field("ring", &*self.ring.load())
            .finish()
    }
}

impl Keys {
    /// The keys kept at `source`; with `create`, made there first if there are none.
    pub async fn load(source: KeySource, create: bool) -> Result<Arc<Self>, KeyError> {
        let ring = if create {
            let (ring, created) = source.read_or_create().await?;
            if created {
                tracing::info!(source = %source.describe(), key = ring.primary(), "made new data keys: back them up apart from the database (losing them loses every guest's contact details)");
            }
            ring
        } else {
            source.read().await?.ok_or(KeyError::Missing(
                source.describe(),
                "make them once with `como-saga keys init`",
            ))?
        };
        Ok(Arc::new(Self {
            ring: ArcSwap::from_pointee(ring),
            source,
            last_prompted: tokio::sync::Mutex::new(None),
        }))
    }

    /// Keys from a keyring in hand (tests, benchmarks).
    pub fn fixed(ring: Keyring) -> Arc<Self> {
        let text = ring.to_text();
        Arc::new(Self {
            ring: ArcSwap::from_pointee(ring),
            source: KeySource::Text(text),
            last_prompted: tokio::sync::Mutex::new(None),
        })
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The id of the key that seals now.
    pub fn primary(&self) -> String {
        self.ring.load().primary().to_owned()
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.ring.load().key_ids()
    }

    /// Seal `contact` for `saga` with the primary key.
    pub fn seal(&self, saga: SagaId, contact: &GuestContact) -> SealedGuest {
        self.ring.load().seal(saga, contact)
    }

    /// `guest` as it may be kept: a contact sealed, anything else as it is.
    pub fn seal_guest(&self, saga: SagaId, guest: &Guest) -> Guest {
        match guest {
            Guest::Contact(c) => Guest::Sealed {
                sealed: self.seal(saga, c),
            },
            other => other.clone(),
        }
    }

    /// Open a contact sealed for `saga`. A key id this process has not seen makes it read its
    /// keys again first: one read at a time (callers that meet the same new key meanwhile wait
    /// for it and use what it found), and at most one a second.
    pub async fn open(
        &self,
        saga: SagaId,
        sealed: &SealedGuest,
    ) -> Result<GuestContact, OpenError> {
        match self.ring.load().open(saga, sealed) {
            Err(OpenError::UnknownKey(_)) => {}
            done => return done,
        }
        let mut last = self.last_prompted.lock().await;
        // Another caller may have read the keys while this one waited.
        match self.ring.load().open(saga, sealed) {
            Err(OpenError::UnknownKey(_)) => {}
            done => return done,
        }
        if last.is_none_or(|t| t.elapsed() >= RELOAD_AT_MOST_EVERY) {
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot read the data keys again");
            }
            *last = Some(Instant::now());
        }
        self.ring.load().open(saga, sealed)
    }

    /// The contact of `guest`: in the clear as it is, sealed opened, erased none.
    pub async fn open_guest(
        &self,
        saga: SagaId,
        guest: &Guest,
    ) -> Result<Option<GuestContact>, OpenError> {
        match guest {
            Guest::Contact(c) => Ok(Some(c.clone())),
            Guest::Sealed { sealed } => self.open(saga, sealed).await.map(Some),
            Guest::Erased { .. } => Ok(None),
        }
    }

    /// Read the keys again; returns whether they changed.
    pub async fn reload(&self) -> Result<bool, KeyError> {
        let Some(ring) = self.source.read().await? else {
            return Err(KeyError::Missing(
                self.source.describe(),
                "they were there when this process started: restore them",
            ));
        };
        let before = self.ring.load();
        for id in before.key_ids() {
            if ring.has(&id) && !ring.same_key(&before, &id) {
                tracing::error!(source = %self.source.describe(), key = %id, "data key {id} is not the key it was: values sealed with the old one no longer open; put the old keyring back");
            }
        }
        let changed = before.primary() != ring.primary() || before.key_ids() != ring.key_ids();
        if changed {
            tracing::info!(source = %self.source.describe(), primary = ring.primary(), keys = ?ring.key_ids(), "data keys changed");
        }
        self.ring.store(Arc::new(ring));
        Ok(changed)
    }

    /// Read the keys again every `every` until `shutdown`.
    pub async fn follow(
        self: Arc<Self>,
        every: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.reload().await {
                tracing::warn!(error = %e, "cannot read the data keys again; the ones read before stay in use");
            }
        }
    }

    /// Rotate: a new key, primary from now on, kept where the keys are; the old ones stay to
    /// open what they sealed. Returns the new key's id.
    pub async fn rotate(&self) -> Result<String, KeyError> {
        // From the source, not this process's copy: another process may have rotated.
        let current = self.source.read().await?.ok_or(KeyError::Missing(
            self.source.describe(),
            "make them once with `como-saga keys init`",
        ))?;
        let rotated = current.rotated();
        self.source.write_if(Some(&current), &rotated).await?;
        let id = rotated.primary().to_owned();
        self.ring.store(Arc::new(rotated));
        Ok(id)
    }
}

fn vault_error(e: OpenError) -> como_ports::VaultError {
    match e {
        OpenError::UnknownKey(k) => como_ports::VaultError::UnknownKey(k),
        OpenError::Unauthentic(k) => como_ports::VaultError::Unauthentic(k),
    }
}

#[async_trait::async_trait]
impl como_ports::GuestVault for Keys {
    fn seal(&self, saga: SagaId, guest: &Guest) -> Result<Guest, como_ports::VaultError> {
        Ok(self.seal_guest(saga, guest))
    }

    async fn open(
        &self,
        saga: SagaId,
        guest: &Guest,
    ) -> Result<Option<GuestContact>, como_ports::VaultError> {
        self.open_guest(saga, guest).await.map_err(vault_error)
    }

    fn sealing_key(&self) -> Option<String> {
        Some(self.primary())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn contact() -> GuestContact {
        como_schemas::examples::booking_request(
            "r-1",
            chrono::NaiveDate::from_ymd_opt(2030, 1, 1).unwrap(),
        )
        .guest
        .contact()
        .unwrap()
        .clone()
    }

    #[tokio::test]
    async fn a_key_file_is_made_once_0600_and_a_rotation_elsewhere_is_picked_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("como-saga.keys");
        let source = KeySource::File(path.clone());
        assert!(matches!(
            Keys::load(source.clone(), false).await,
            Err(KeyError::Missing(..))
        ));
        let a = Keys::load(source.clone(), true).await.unwrap();
        let b = Keys::load(source.clone(), true).await.unwrap();
        assert_eq!(a.key_ids(), b.key_ids());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let saga = SagaId::for_request(&como_schemas::RequestId::parse("r-1").unwrap());
        let old = a.seal(saga, &contact());
        // `b` rotates; `a` learns the new key from the first value sealed with it.
        assert_eq!(b.rotate().await.unwrap(), "k2");
        let new = b.seal(saga, &contact());
        assert_eq!(new.key_id(), "k2");
        assert_eq!(a.open(saga, &new).await.unwrap(), contact());
        assert_eq!(a.primary(), "k2");
        assert_eq!(b.open(saga, &old).await.unwrap(), contact());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a rotated file keeps 0600");
        let left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no file left aside: {left:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_opens_that_meet_a_new_key_at_once_all_open_it() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::File(dir.path().join("k.keys"));
        let a = Keys::load(source.clone(), true).await.unwrap();
        let b = Keys::load(source, true).await.unwrap();
        b.rotate().await.unwrap();
        let saga = SagaId::for_request(&como_schemas::RequestId::parse("r-1").unwrap());
        let sealed = b.seal(saga, &contact());
        // Until now `a` knows k1 only: every one of these meets k2 at once; one read of the
        // keys serves them all, none is refused.
        let opens: Vec<_> = (0..32)
            .map(|_| {
                let (a, sealed) = (a.clone(), sealed.clone());
                tokio::spawn(async move { a.open(saga, &sealed).await })
            })
            .collect();
        for o in opens {
            assert_eq!(o.await.unwrap().unwrap(), contact());
        }
    }

    #[tokio::test]
    async fn two_rotations_at_once_never_lose_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let source = KeySource::File(dir.path().join("k.keys"));
        let a = Keys::load(source.clone(), true).await.unwrap();
        let b = Keys::load(source.clone(), true).await.unwrap();
        // `b` rotates from what it read before `a` rotated: refused, not written over.
        let stale = source.read().await.unwrap().unwrap();
        a.rotate().await.unwrap();
        let lost = stale.rotated();
        assert!(matches!(
            source.write_if(Some(&stale), &lost).await,
            Err(KeyError::Changed(_))
        ));
        let kept = source.read().await.unwrap().unwrap();
        assert_eq!(kept.key_ids(), ["k1", "k2"]);
        assert!(kept.same_key(&a.ring.load(), "k2"));
        // Read again, `b` rotates on top of it.
        assert_eq!(b.rotate().await.unwrap(), "k3");
    }

    #[tokio::test]
    async fn fixed_keys_cannot_rotate() {
        let keys = Keys::fixed(Keyring::generate());
        assert!(matches!(keys.rotate().await, Err(KeyError::Fixed)));
    }
}
