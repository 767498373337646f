//! Read-only lookups in the Hugging Face cache (the layout `huggingface_hub` and `hf-hub` share):
//! `<cache>/models--<owner>--<name>/refs/<revision>` holds a commit hash and
//! `<cache>/models--<owner>--<name>/snapshots/<commit>/<path>` the file (usually a symlink into
//! `blobs/`). Done by hand so that a warm cache needs no network client at all.

use std::path::{Path, PathBuf};

/// The hub cache directory, in the order the Hugging Face tools use:
/// `HF_HUB_CACHE`, `HUGGINGFACE_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
/// `~/.cache/huggingface/hub`.
pub fn default_cache_dir() -> PathBuf {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return dir;
    }
    let home = var("HF_HOME").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .unwrap_or_else(|| {
                var("HOME")
                    .unwrap_or_else(|| PathBuf::from("/tmp"))
                    .join(".cache")
            })
            .join("huggingface")
    });
    home.join("hub")
}

/// True when the environment asks for no network access (`HF_HUB_OFFLINE=1`, like the Python tools).
pub fn offline_from_env() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

/// `models--owner--name`.
pub fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

pub fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit())
}

/// The commit a revision points at in the cache, if the cache knows it.
pub fn cached_commit(cache_dir: &Path, repo: &str, revision: &str) -> Option<String> {
    if is_commit_hash(revision) {
        return Some(revision.to_ascii_lowercase());
    }
    let refs = cache_dir
        .join(repo_folder(repo))
        .join("refs")
        .join(revision);
    let commit = std::fs::read_to_string(refs).ok()?;
    let commit = commit.trim();
    is_commit_hash(commit).then(|| commit.to_string())
}

/// The cached copy of `path_in_repo` at `revision`, if present (a dangling symlink counts as absent).
pub fn cached_file(
    cache_dir: &Path,
    repo: &str,
    revision: &str,
    path_in_repo: &str,
) -> Option<PathBuf> {
    let commit = cached_commit(cache_dir, repo, revision)?;
    let file = cache_dir
        .join(repo_folder(repo))
        .join("snapshots")
        .join(commit)
        .join(path_in_repo);
    file.is_file().then_some(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_through_refs_and_commits() {
        let dir = tempfile::tempdir().unwrap();
        let commit = "a".repeat(40);
        let repo_dir = dir.path().join("models--owner--name");
        std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
        std::fs::write(repo_dir.join("refs/main"), format!("{commit}\n")).unwrap();
        let snap = repo_dir.join("snapshots").join(&commit).join("unet");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("config.json"), "{}").unwrap();

        let found = cached_file(dir.path(), "owner/name", "main", "unet/config.json").unwrap();
        assert_eq!(found, snap.join("config.json"));
        assert_eq!(
            cached_file(dir.path(), "owner/name", &commit, "unet/config.json"),
            Some(snap.join("config.json"))
        );
        assert!(cached_file(dir.path(), "owner/name", "dev", "unet/config.json").is_none());
        assert!(cached_file(dir.path(), "owner/name", "main", "vae/config.json").is_none());
        assert!(cached_file(dir.path(), "owner/other", "main", "unet/config.json").is_none());
    }

    #[test]
    fn dangling_snapshot_links_are_not_files() {
        let dir = tempfile::tempdir().unwrap();
        let commit = "b".repeat(40);
        let snap = dir.path().join("models--o--n/snapshots").join(&commit);
        std::fs::create_dir_all(&snap).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            dir.path().join("models--o--n/blobs/missing"),
            snap.join("w.bin"),
        )
        .unwrap();
        assert!(cached_file(dir.path(), "o/n", &commit, "w.bin").is_none());
    }
}
