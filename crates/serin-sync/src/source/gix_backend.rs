//! Git in-process through gix for `file://` and anonymous `http(s)://` remotes: listing the
//! remote's references, and a depth-1 fetch of one reference (or commit) checked out into a
//! fresh directory. Blocking: callers run it in `spawn_blocking`. Remotes gix does not serve here
//! (ssh, credentials from a Secret) go through the system `git` (`super::git`). Does I/O.

use std::{collections::BTreeMap, num::NonZeroU32, path::Path, sync::atomic::AtomicBool};

use gix::protocol::handshake::Ref;

/// Whether gix handles this remote: `file://`, or `http(s)://` without credentials.
pub fn handles(url: &str, has_credentials: bool) -> bool {
    url.starts_with("file://")
        || (!has_credentials && (url.starts_with("https://") || url.starts_with("http://")))
}

/// The remote's references: full name to commit (tags peeled).
pub fn list_refs(url: &str) -> Result<BTreeMap<String, String>, String> {
    let scratch = tempfile::Builder::new()
        .prefix("serin-sync-ls-remote-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let repo = gix::init_bare(scratch.path()).map_err(|e| e.to_string())?;
    let remote = repo
        .remote_at(url)
        .map_err(|e| e.to_string())?
        .with_refspecs(["+refs/*:refs/remotes/origin/*"], gix::remote::Direction::Fetch)
        .map_err(|e| e.to_string())?;
    let connection = remote
        .connect(gix::remote::Direction::Fetch)
        .map_err(|e| e.to_string())?;
    let options = gix::remote::ref_map::Options {
        prefix_from_spec_as_filter_on_remote: false,
        ..Default::default()
    };
    let (map, _) = connection
        .ref_map(gix::progress::Discard, options)
        .map_err(|e| e.to_string())?;
    let mut refs = BTreeMap::new();
    for r in map.remote_refs {
        let (name, object) = match r {
            Ref::Direct {
                full_ref_name,
                object,
            }
            | Ref::Peeled {
                full_ref_name,
                object,
                ..
            } => (full_ref_name, object),
            Ref::Symbolic {
                full_ref_name,
                object,
                ..
            } => (full_ref_name, object),
            Ref::Unborn { .. } => continue,
        };
        refs.insert(name.to_string(), object.to_string());
    }
    Ok(refs)
}

/// Fetches `revision` (a full reference name or a commit id) at depth 1 into `dir` and checks it
/// out; returns the commit id and its subject.
pub fn fetch(url: &str, revision: &str, dir: &Path) -> Result<(String, String), String> {
    let interrupt = AtomicBool::new(false);
    let depth = NonZeroU32::new(1).ok_or("depth")?;
    let mut prepare = gix::prepare_clone(url, dir)
        .map_err(|e| e.to_string())?
        .with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth))
        .with_revision(Some(revision))
        .map_err(|e| e.to_string())?;
    let (mut checkout, _) = prepare
        .fetch_then_checkout(gix::progress::Discard, &interrupt)
        .map_err(|e| e.to_string())?;
    let (repo, _) = checkout
        .main_worktree(gix::progress::Discard, &interrupt)
        .map_err(|e| e.to_string())?;
    let commit = repo.head_commit().map_err(|e| e.to_string())?;
    let subject = commit
        .message()
        .map(|m| m.summary().to_string())
        .unwrap_or_default();
    Ok((commit.id().to_string(), subject))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(dir)
            .output()
            .expect("git runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn lists_and_fetches_branches_tags_and_commits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(work.join("a.yaml"), "one").expect("write");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "First"]);
        let first = git(&work, &["rev-parse", "HEAD"]);
        git(&work, &["tag", "-a", "v1.0.0", "-m", "release"]);
        std::fs::write(work.join("a.yaml"), "two").expect("write");
        git(&work, &["commit", "-q", "-am", "Second"]);
        let second = git(&work, &["rev-parse", "HEAD"]);
        let url = format!("file://{}", work.display());

        let refs = list_refs(&url).expect("listed");
        assert_eq!(refs.get("refs/heads/main"), Some(&second));
        assert_eq!(
            refs.get("refs/tags/v1.0.0"),
            Some(&first),
            "annotated tags are peeled"
        );

        let (sha, subject) = fetch(&url, "refs/heads/main", &tmp.path().join("branch")).expect("branch");
        assert_eq!((sha.as_str(), subject.as_str()), (second.as_str(), "Second"));
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("branch/a.yaml")).expect("read"),
            "two"
        );
        let (sha, _) = fetch(&url, "refs/tags/v1.0.0", &tmp.path().join("tag")).expect("tag");
        assert_eq!(sha, first);
        let (sha, _) = fetch(&url, &first, &tmp.path().join("commit")).expect("commit");
        assert_eq!(sha, first);
        assert!(list_refs("file:///nonexistent/repo.git").is_err());
    }
}
