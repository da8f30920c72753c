//! Git operations: listing the remote's references (the cheap check that skips fetching when
//! nothing changed) and a shallow fetch of one reference into a fresh directory. `file://` and
//! anonymous `http(s)://` remotes go through gix in-process (`super::gix_backend`, on a blocking
//! thread); ssh and remotes with credentials through the system `git` program, with the Secret's
//! credentials passed per command (an HTTP header, or an `ssh` command with the identity and
//! known_hosts written to private files). Does I/O (processes, files).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::Engine;
use tokio::process::Command;

use super::revision::{self, Checkout};

/// Errors of Git operations, with Flux's reasons.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Operation(String),
    #[error("git repository is empty")]
    Empty,
}

impl GitError {
    /// Flux's condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Auth(_) => "AuthenticationFailed",
            Self::Operation(_) => "GitOperationFailed",
            Self::Empty => "EmptyGitRepository",
        }
    }
}

/// Credentials from a GitRepository's `secretRef`.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub username: Option<String>,
    pub password: Option<String>,
    pub bearer_token: Option<String>,
    pub identity: Option<String>,
    pub known_hosts: Option<String>,
}

impl Credentials {
    /// Reads the keys Flux uses from a Secret's decoded data.
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Self {
        let get = |k: &str| {
            data.get(k)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .filter(|s| !s.is_empty())
        };
        Self {
            username: get("username"),
            password: get("password"),
            bearer_token: get("bearerToken"),
            identity: get("identity"),
            known_hosts: get("known_hosts"),
        }
    }
}

/// A fetched commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub sha: String,
    /// The full reference it was fetched from (`None` for a commit checkout).
    pub reference: Option<String>,
    pub subject: String,
    /// Flux's revision string.
    pub revision: String,
}

/// Runs `git` with the credentials of one repository.
#[derive(Debug)]
pub struct GitCli {
    url: String,
    timeout: Duration,
    credentials: Credentials,
    /// Holds the ssh key and known_hosts files while the commands run.
    secrets_dir: Option<tempfile::TempDir>,
}

impl GitCli {
    pub fn new(url: &str, timeout: Duration, credentials: Credentials) -> Result<Self, GitError> {
        let mut cli = Self {
            url: url.to_owned(),
            timeout,
            credentials,
            secrets_dir: None,
        };
        if cli.credentials.identity.is_some() {
            let dir = tempfile::Builder::new()
                .prefix("serin-sync-ssh-")
                .tempdir()
                .map_err(|e| GitError::Auth(format!("cannot write the ssh identity: {e}")))?;
            write_private(
                &dir.path().join("identity"),
                cli.credentials.identity.as_deref().unwrap_or_default(),
            )?;
            write_private(
                &dir.path().join("known_hosts"),
                cli.credentials.known_hosts.as_deref().unwrap_or_default(),
            )?;
            if let Some(passphrase) = cli.credentials.password.as_deref() {
                decrypt_identity(&dir.path().join("identity"), passphrase)?;
            }
            cli.secrets_dir = Some(dir);
        }
        Ok(cli)
    }

    fn command(&self, cwd: Option<&Path>) -> Command {
        let mut cmd = Command::new("git");
        cmd.env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "true")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        let c = &self.credentials;
        if let Some(token) = &c.bearer_token {
            cmd.arg("-c")
                .arg(format!("http.extraHeader=Authorization: Bearer {token}"));
        } else if let (Some(user), Some(pass)) = (&c.username, &c.password) {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
            cmd.arg("-c")
                .arg(format!("http.extraHeader=Authorization: Basic {basic}"));
        }
        if let Some(dir) = &self.secrets_dir {
            let key = dir.path().join("identity");
            let known = dir.path().join("known_hosts");
            let strict = if c.known_hosts.is_some() { "yes" } else { "no" };
            cmd.env(
                "GIT_SSH_COMMAND",
                format!(
                    "ssh -F /dev/null -i '{}' -o IdentitiesOnly=yes -o UserKnownHostsFile='{}' -o StrictHostKeyChecking={strict} -o BatchMode=yes",
                    key.display(),
                    known.display()
                ),
            );
        }
        cmd
    }

    async fn run(&self, cwd: Option<&Path>, args: &[&str]) -> Result<String, GitError> {
        let mut cmd = self.command(cwd);
        cmd.args(args);
        let output = tokio::time::timeout(self.timeout, cmd.output())
            .await
            .map_err(|_| GitError::Operation(format!("git {} timed out after {:?}", args[0], self.timeout)))?
            .map_err(|e| GitError::Operation(format!("cannot run git: {e}")))?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr).trim().replace('\n', "; ");
        // A host key mismatch fails the Git operation (Flux: GitOperationFailed), not the login.
        let auth = [
            "Authentication failed",
            "Permission denied",
            "could not read Username",
        ]
        .iter()
        .any(|s| stderr.contains(s));
        let message = format!("unable to clone '{}': {stderr}", self.url);
        Err(if auth {
            GitError::Auth(message)
        } else {
            GitError::Operation(message)
        })
    }

    fn unable(&self, err: GitError) -> GitError {
        match err {
            GitError::Operation(m) => GitError::Operation(format!("unable to clone '{}': {m}", self.url)),
            other => other,
        }
    }

    /// The remote's references: `(full name, commit sha)`, tags peeled to their commit.
    pub async fn list_refs(&self) -> Result<BTreeMap<String, String>, GitError> {
        if self.uses_gix() {
            let url = self.url.clone();
            return self.blocking(move || super::gix_backend::list_refs(&url)).await;
        }
        let out = self.run(None, &["ls-remote", &self.url]).await?;
        let mut refs = BTreeMap::new();
        for line in out.lines() {
            let Some((sha, name)) = line.split_once('\t') else {
                continue;
            };
            match name.strip_suffix("^{}") {
                Some(peeled) => {
                    refs.insert(peeled.to_owned(), sha.to_owned());
                }
                None => {
                    refs.entry(name.to_owned()).or_insert_with(|| sha.to_owned());
                }
            }
        }
        Ok(refs)
    }

    /// The revision the remote has for `checkout`, without fetching: `Ok(None)` when it can only
    /// be known by fetching (a commit checkout).
    pub async fn remote_revision(&self, checkout: &Checkout) -> Result<Option<String>, GitError> {
        if matches!(checkout, Checkout::Commit { .. }) {
            return Ok(None);
        }
        let refs = self.list_refs().await?;
        if refs.is_empty() {
            return Err(GitError::Empty);
        }
        let (name, absolute) = resolve(checkout, &refs).map_err(|e| self.unable(e))?;
        Ok(Some(revision::revision(Some(&name), &refs[&name], absolute)))
    }

    fn uses_gix(&self) -> bool {
        let c = &self.credentials;
        let has_credentials = c.bearer_token.is_some() || c.username.is_some() || c.password.is_some();
        super::gix_backend::handles(&self.url, has_credentials)
    }

    /// Runs a gix operation on a blocking thread within the timeout.
    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce() -> Result<T, String> + Send + 'static,
    ) -> Result<T, GitError> {
        let task = tokio::task::spawn_blocking(op);
        let url = self.url.clone();
        match tokio::time::timeout(self.timeout, task).await {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(message))) => Err(GitError::Operation(format!("unable to clone '{url}': {message}"))),
            Ok(Err(join)) => Err(GitError::Operation(format!("unable to clone '{url}': {join}"))),
            Err(_) => Err(GitError::Operation(format!(
                "unable to clone '{url}': timed out after {:?}",
                self.timeout
            ))),
        }
    }

    /// Fetches `checkout` at depth 1 into `dir` (created) and checks it out.
    pub async fn fetch(&self, checkout: &Checkout, dir: &Path) -> Result<Commit, GitError> {
        if self.uses_gix() {
            let (reference, absolute, want) = match checkout {
                Checkout::Commit { sha, .. } => (None, false, sha.clone()),
                other => {
                    let refs = self.list_refs().await?;
                    if refs.is_empty() {
                        return Err(GitError::Empty);
                    }
                    let (name, absolute) = resolve(other, &refs).map_err(|e| self.unable(e))?;
                    (Some(name.clone()), absolute, name)
                }
            };
            let (url, target) = (self.url.clone(), dir.to_path_buf());
            let (sha, subject) = self
                .blocking(move || super::gix_backend::fetch(&url, &want, &target))
                .await?;
            let revision = revision::revision(reference.as_deref(), &sha, absolute);
            return Ok(Commit {
                sha,
                reference,
                subject,
                revision,
            });
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| GitError::Operation(format!("cannot create {}: {e}", dir.display())))?;
        self.run(Some(dir), &["init", "-q"]).await?;
        let (reference, absolute, want) = match checkout {
            Checkout::Commit { sha, .. } => (None, false, sha.clone()),
            other => {
                let refs = self.list_refs().await?;
                if refs.is_empty() {
                    return Err(GitError::Empty);
                }
                let (name, absolute) = resolve(other, &refs).map_err(|e| self.unable(e))?;
                (Some(name.clone()), absolute, name)
            }
        };
        let fetched = self
            .run(
                Some(dir),
                &["fetch", "-q", "--depth", "1", "--no-tags", &self.url, &want],
            )
            .await;
        if let (Err(err), Checkout::Commit { sha, branch }) = (&fetched, checkout) {
            // A server that refuses to serve a commit by id: fetch the branch (or everything)
            // and look for the commit there.
            let spec = branch.as_ref().map_or_else(
                || "+refs/heads/*:refs/remotes/origin/*".to_owned(),
                |b| format!("refs/heads/{b}"),
            );
            self.run(Some(dir), &["fetch", "-q", "--no-tags", &self.url, &spec])
                .await?;
            if self
                .run(Some(dir), &["cat-file", "-e", &format!("{sha}^{{commit}}")])
                .await
                .is_err()
            {
                return Err(GitError::Operation(format!("{err}; commit '{sha}' not found")));
            }
            self.run(Some(dir), &["checkout", "-q", "--detach", sha]).await?;
        } else {
            fetched?;
            self.run(Some(dir), &["checkout", "-q", "--detach", "FETCH_HEAD"])
                .await?;
        }
        let sha = self
            .run(Some(dir), &["rev-parse", "HEAD"])
            .await?
            .trim()
            .to_owned();
        let subject = self
            .run(Some(dir), &["log", "-1", "--format=%s"])
            .await?
            .trim()
            .to_owned();
        let revision = revision::revision(reference.as_deref(), &sha, absolute);
        Ok(Commit {
            sha,
            reference,
            subject,
            revision,
        })
    }
}

/// The full reference a checkout resolves to among the remote's, and whether its revision
/// keeps the absolute name.
fn resolve(checkout: &Checkout, refs: &BTreeMap<String, String>) -> Result<(String, bool), GitError> {
    match checkout {
        Checkout::SemVer(constraint) => {
            if !revision::is_valid_constraint(constraint) {
                return Err(GitError::Operation(format!(
                    "semver parse error: improper constraint: {constraint}"
                )));
            }
            let tags: Vec<&str> = refs.keys().filter_map(|r| r.strip_prefix("refs/tags/")).collect();
            revision::highest_matching_tag(constraint, &tags)
                .map(|t| (format!("refs/tags/{t}"), false))
                .ok_or_else(|| GitError::Operation(format!("no match found for semver: {constraint}")))
        }
        other => {
            let name = other.remote_ref().unwrap_or_default();
            if refs.contains_key(&name) {
                Ok((name, matches!(other, Checkout::Name(_))))
            } else {
                Err(GitError::Operation(format!(
                    "couldn't find remote ref \"{name}\""
                )))
            }
        }
    }
}

/// Rewrites a passphrase-protected ssh key without its passphrase (the file is private to this
/// process), so that `ssh` needs no prompt.
fn decrypt_identity(path: &Path, passphrase: &str) -> Result<(), GitError> {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-p", "-P", passphrase, "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| GitError::Auth(format!("cannot run ssh-keygen to decrypt the ssh identity: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(GitError::Auth(format!(
            "failed to decrypt the ssh identity with the Secret's password: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn write_private(path: &PathBuf, content: &str) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    let mut text = content.to_owned();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    std::fs::write(path, text)
        .and_then(|()| std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)))
        .map_err(|e| GitError::Auth(format!("cannot write {}: {e}", path.display())))
}
