//! Turning a manifest into paths on disk. Per file: the component's local folder, then the
//! Hugging Face cache, then (with the `download` feature, unless offline) the hub.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cache;
use crate::error::WeightsError;
use crate::manifest::{ComponentEntry, ComponentKind, Manifest};

/// How to resolve files that are not in a local folder.
#[derive(Clone, Debug)]
pub struct ResolveOptions {
    /// The Hugging Face cache to read (and download into).
    pub cache_dir: PathBuf,
    /// Whether missing files may be fetched from the hub. False under `HF_HUB_OFFLINE=1`.
    pub allow_download: bool,
    /// Show a progress bar on stderr while downloading.
    pub progress: bool,
    /// Resolve only these components (all of the manifest's when `None`). A caller that runs
    /// without ONNX face models, or without the safety checker, skips them here.
    pub only: Option<Vec<ComponentKind>>,
}

impl Default for ResolveOptions {
    /// Cache from the environment (`HF_HUB_CACHE`, `HF_HOME`, ...), downloads unless `HF_HUB_OFFLINE`
    /// is set, with progress.
    fn default() -> Self {
        ResolveOptions {
            cache_dir: cache::default_cache_dir(),
            allow_download: !cache::offline_from_env(),
            progress: true,
            only: None,
        }
    }
}

/// Where a resolved file was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOrigin {
    Local,
    Cache,
    Downloaded,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedFile {
    /// The name as listed in the manifest (relative to the component's folder).
    pub name: String,
    pub path: PathBuf,
    pub origin: FileOrigin,
}

/// The files of one component, in manifest order.
#[derive(Clone, Debug)]
pub struct ResolvedComponent {
    pub kind: ComponentKind,
    pub manifest: PathBuf,
    pub files: Vec<ResolvedFile>,
}

impl ResolvedComponent {
    /// The file listed as `name` (exact match on the listed name or on its last path segment).
    pub fn file(&self, name: &str) -> Result<&Path, WeightsError> {
        self.files
            .iter()
            .find(|f| f.name == name || file_name(&f.name) == name)
            .map(|f| f.path.as_path())
            .ok_or_else(|| self.not_listed(name))
    }

    /// The listed file `name`, or `None` when the manifest does not list it.
    pub fn optional_file(&self, name: &str) -> Option<&Path> {
        self.file(name).ok()
    }

    /// All files whose name ends in `.{ext}`, in manifest order (e.g. safetensors shards).
    pub fn files_with_extension(&self, ext: &str) -> Vec<&Path> {
        let suffix = format!(".{ext}");
        self.files
            .iter()
            .filter(|f| f.name.ends_with(&suffix))
            .map(|f| f.path.as_path())
            .collect()
    }

    /// The weights of the component: all `.safetensors` files, else the first of `.bin`/`.pt`/
    /// `.pth`/`.ckpt`/`.onnx`.
    pub fn weights(&self) -> Result<Vec<&Path>, WeightsError> {
        let safetensors = self.files_with_extension("safetensors");
        if !safetensors.is_empty() {
            return Ok(safetensors);
        }
        for ext in ["bin", "pt", "pth", "ckpt", "onnx"] {
            if let Some(first) = self.files_with_extension(ext).into_iter().next() {
                return Ok(vec![first]);
            }
        }
        Err(self.not_listed("*.safetensors | *.bin | *.pt | *.pth | *.ckpt | *.onnx"))
    }

    fn not_listed(&self, wanted: &str) -> WeightsError {
        WeightsError::FileNotListed {
            manifest: self.manifest.clone(),
            component: self.kind,
            wanted: wanted.to_string(),
            listed: self
                .files
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

fn file_name(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

/// Every file of a model set, found on disk.
#[derive(Clone, Debug)]
pub struct ResolvedModelSet {
    pub name: String,
    pub manifest: PathBuf,
    pub components: BTreeMap<ComponentKind, ResolvedComponent>,
}

impl ResolvedModelSet {
    pub fn get(&self, kind: ComponentKind) -> Result<&ResolvedComponent, WeightsError> {
        self.components
            .get(&kind)
            .ok_or_else(|| WeightsError::ComponentMissing {
                manifest: self.manifest.clone(),
                component: kind,
            })
    }

    pub fn optional(&self, kind: ComponentKind) -> Option<&ResolvedComponent> {
        self.components.get(&kind)
    }
}

/// Resolves every component of `manifest` (or `options.only`).
pub fn resolve(
    manifest: &Manifest,
    options: &ResolveOptions,
) -> Result<ResolvedModelSet, WeightsError> {
    let mut components = BTreeMap::new();
    let mut downloader = crate::download::Downloader::new(options);
    for (kind, entry) in &manifest.components {
        if let Some(only) = &options.only {
            if !only.contains(kind) {
                continue;
            }
        }
        let mut files = Vec::with_capacity(entry.files.len());
        for name in &entry.files {
            files.push(resolve_file(
                manifest,
                entry,
                name,
                options,
                &mut downloader,
            )?);
        }
        tracing::debug!(component = %kind, files = files.len(), "resolved component");
        if let Some(licence) = &entry.licence {
            let from = entry.repo.as_deref().unwrap_or("a local folder");
            tracing::warn!(component = %kind, from, "licence: {licence}");
        }
        components.insert(
            *kind,
            ResolvedComponent {
                kind: *kind,
                manifest: manifest.path.clone(),
                files,
            },
        );
    }
    Ok(ResolvedModelSet {
        name: manifest.name.clone(),
        manifest: manifest.path.clone(),
        components,
    })
}

/// Reads `path` as a manifest and resolves it.
pub fn resolve_manifest_file(
    path: impl AsRef<Path>,
    options: &ResolveOptions,
) -> Result<ResolvedModelSet, WeightsError> {
    let manifest = Manifest::from_file(path)?;
    resolve(&manifest, options)
}

fn resolve_file(
    manifest: &Manifest,
    entry: &ComponentEntry,
    name: &str,
    options: &ResolveOptions,
    downloader: &mut crate::download::Downloader,
) -> Result<ResolvedFile, WeightsError> {
    let found = |path: PathBuf, origin: FileOrigin| ResolvedFile {
        name: name.to_string(),
        path,
        origin,
    };
    if let Some(local) = &entry.local {
        let folder = match &entry.folder {
            Some(folder) => local.join(folder),
            None => local.clone(),
        };
        let path = folder.join(name);
        if path.is_file() {
            return Ok(found(path, FileOrigin::Local));
        }
        if entry.repo.is_none() {
            return Err(WeightsError::LocalFileMissing {
                manifest: manifest.path.clone(),
                component: entry.kind,
                file: name.to_string(),
                folder,
            });
        }
    }
    let repo = entry
        .repo
        .as_deref()
        .expect("a manifest entry has a repo or a local folder (checked when parsing)");
    let path_in_repo = entry.repo_path(name);
    if let Some(path) = cache::cached_file(&options.cache_dir, repo, &entry.revision, &path_in_repo)
    {
        return Ok(found(path, FileOrigin::Cache));
    }
    let not_cached = |why: &str| WeightsError::NotCached {
        manifest: manifest.path.clone(),
        component: entry.kind,
        file: path_in_repo.clone(),
        repo: repo.to_string(),
        revision: entry.revision.clone(),
        cache_dir: options.cache_dir.clone(),
        why: why.to_string(),
    };
    if !options.allow_download {
        return Err(not_cached(
            "offline: HF_HUB_OFFLINE is set or downloads were disabled",
        ));
    }
    if !crate::download::AVAILABLE {
        return Err(not_cached(
            "this build has no hub client; rebuild with the `download` feature",
        ));
    }
    let path = downloader
        .download(repo, &entry.revision, &path_in_repo)
        .map_err(|message| WeightsError::Download {
            manifest: manifest.path.clone(),
            component: entry.kind,
            file: path_in_repo.clone(),
            repo: repo.to_string(),
            revision: entry.revision.clone(),
            message,
        })?;
    Ok(found(path, FileOrigin::Downloaded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A manifest whose components all live in one local folder `root` except the VAE, which
    /// comes from hub repo `owner/vae` (through the cache).
    fn manifest_text(root: &str) -> String {
        let mut text = String::from("name = \"t\"\n");
        text.push_str(&format!("[sources.base]\nlocal = \"{root}\"\n"));
        for (key, folder, files) in [
            ("tokenizer", "tokenizer", "\"vocab.json\", \"merges.txt\""),
            (
                "text_encoder",
                "text_encoder",
                "\"config.json\", \"model.safetensors\"",
            ),
            (
                "unet",
                "unet",
                "\"config.json\", \"a.safetensors\", \"b.safetensors\"",
            ),
            ("scheduler", "scheduler", "\"scheduler_config.json\""),
            (
                "image_encoder",
                "image_encoder",
                "\"config.json\", \"model.safetensors\"",
            ),
            ("ip_adapter", "ip", "\"adapter.bin\""),
            ("face_detector", "faces", "\"det.onnx\""),
            ("face_recognizer", "faces", "\"rec.onnx\""),
        ] {
            text.push_str(&format!(
                "[components.{key}]\nsource = \"base\"\nfolder = \"{folder}\"\nfiles = [{files}]\n"
            ));
        }
        text.push_str("[components.vae]\nrepo = \"owner/vae\"\nrevision = \"main\"\nfolder = \"vae\"\nfiles = [\"config.json\", \"diffusion_pytorch_model.safetensors\"]\n");
        text
    }

    fn local_tree(root: &Path) {
        for file in [
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "text_encoder/config.json",
            "text_encoder/model.safetensors",
            "unet/config.json",
            "unet/a.safetensors",
            "unet/b.safetensors",
            "scheduler/scheduler_config.json",
            "image_encoder/config.json",
            "image_encoder/model.safetensors",
            "ip/adapter.bin",
            "faces/det.onnx",
            "faces/rec.onnx",
        ] {
            write(&root.join(file), file);
        }
    }

    fn fake_cache(cache: &Path) {
        let commit = "c".repeat(40);
        let repo = cache.join("models--owner--vae");
        write(&repo.join("refs/main"), &commit);
        // Like the real cache: snapshot entries are symlinks into blobs/.
        write(&repo.join("blobs/111"), "{\"vae\": true}");
        write(&repo.join("blobs/222"), "weights");
        let snap = repo.join("snapshots").join(&commit).join("vae");
        std::fs::create_dir_all(&snap).unwrap();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(repo.join("blobs/111"), snap.join("config.json")).unwrap();
            std::os::unix::fs::symlink(
                repo.join("blobs/222"),
                snap.join("diffusion_pytorch_model.safetensors"),
            )
            .unwrap();
        }
        #[cfg(not(unix))]
        {
            std::fs::copy(repo.join("blobs/111"), snap.join("config.json")).unwrap();
            std::fs::copy(
                repo.join("blobs/222"),
                snap.join("diffusion_pytorch_model.safetensors"),
            )
            .unwrap();
        }
    }

    fn options(cache: &Path, allow_download: bool) -> ResolveOptions {
        ResolveOptions {
            cache_dir: cache.to_path_buf(),
            allow_download,
            progress: false,
            only: None,
        }
    }

    #[test]
    fn resolves_local_folder_then_cache() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        local_tree(&root);
        let cache = dir.path().join("hub");
        fake_cache(&cache);
        let manifest_path = dir.path().join("models/t.toml");
        // Relative `local` starts at the manifest's folder.
        write(&manifest_path, &manifest_text("../set"));

        let set = resolve_manifest_file(&manifest_path, &options(&cache, false)).unwrap();
        let unet = set.get(ComponentKind::Unet).unwrap();
        assert_eq!(unet.files[0].origin, FileOrigin::Local);
        assert_eq!(
            std::fs::read_to_string(unet.file("config.json").unwrap()).unwrap(),
            "unet/config.json"
        );
        assert_eq!(unet.weights().unwrap().len(), 2, "both safetensors shards");
        let ip = set.get(ComponentKind::IpAdapter).unwrap();
        assert!(ip.weights().unwrap()[0].ends_with("ip/adapter.bin"));

        let vae = set.get(ComponentKind::Vae).unwrap();
        assert!(vae.files.iter().all(|f| f.origin == FileOrigin::Cache));
        assert_eq!(
            std::fs::read_to_string(vae.file("config.json").unwrap()).unwrap(),
            "{\"vae\": true}"
        );
        assert_eq!(
            std::fs::read_to_string(vae.weights().unwrap()[0]).unwrap(),
            "weights"
        );

        let err = set
            .get(ComponentKind::SafetyChecker)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("safety_checker") && err.contains("t.toml"),
            "{err}"
        );
        let err = unet.file("missing.json").unwrap_err().to_string();
        assert!(
            err.contains("missing.json") && err.contains("a.safetensors"),
            "{err}"
        );
    }

    #[test]
    fn local_file_missing_without_repo_names_everything() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        local_tree(&root);
        std::fs::remove_file(root.join("ip/adapter.bin")).unwrap();
        let cache = dir.path().join("hub");
        fake_cache(&cache);
        let manifest_path = dir.path().join("t.toml");
        write(&manifest_path, &manifest_text("set"));

        let err = resolve_manifest_file(&manifest_path, &options(&cache, true)).unwrap_err();
        assert!(
            matches!(err, WeightsError::LocalFileMissing { .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(
            text.contains("t.toml") && text.contains("ip_adapter") && text.contains("adapter.bin"),
            "{text}"
        );
    }

    #[test]
    fn offline_cache_miss_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        local_tree(&root);
        let empty_cache = dir.path().join("empty-hub");
        let manifest_path = dir.path().join("t.toml");
        write(&manifest_path, &manifest_text("set"));

        let err = resolve_manifest_file(&manifest_path, &options(&empty_cache, false)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, WeightsError::NotCached { .. }), "{err:?}");
        for needle in [
            "t.toml",
            "`vae`",
            "vae/config.json",
            "owner/vae@main",
            "fetch-models",
            "offline",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in: {text}");
        }
    }

    #[test]
    fn only_resolves_the_requested_components() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("set");
        local_tree(&root);
        std::fs::remove_file(root.join("faces/det.onnx")).unwrap();
        let manifest_path = dir.path().join("t.toml");
        write(&manifest_path, &manifest_text("set"));
        let mut opts = options(&dir.path().join("empty"), false);
        opts.only = Some(vec![ComponentKind::Unet, ComponentKind::Tokenizer]);
        let set = resolve_manifest_file(&manifest_path, &opts).unwrap();
        assert_eq!(set.components.len(), 2);
        assert!(set.optional(ComponentKind::FaceDetector).is_none());
    }
}
