//! Errors of manifest parsing and file resolution. Each names the manifest, the component and the
//! file, and says what to do about it.

use std::path::PathBuf;

use crate::manifest::ComponentKind;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read model manifest {path}: {source}; pass an existing models/*.toml file")]
    ManifestRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid model manifest {path}: {message}")]
    ManifestInvalid { path: PathBuf, message: String },

    #[error(
        "model manifest {manifest}: component `{component}` needs `{file}`, which is not in the local folder {folder} \
         and the component names no hub repo to fall back on; put the file there or add `repo = \"owner/name\"`"
    )]
    LocalFileMissing {
        manifest: PathBuf,
        component: ComponentKind,
        file: String,
        folder: PathBuf,
    },

    #[error(
        "model manifest {manifest}: component `{component}` needs `{file}` from {repo}@{revision}, which is not in the \
         Hugging Face cache {cache_dir}, and downloading is off ({why}); run `headshot fetch-models --models {manifest}` \
         where the hub is reachable (with the same HF_HOME / HF_HUB_CACHE), or point `local` at a folder holding the file"
    )]
    NotCached {
        manifest: PathBuf,
        component: ComponentKind,
        file: String,
        repo: String,
        revision: String,
        cache_dir: PathBuf,
        why: String,
    },

    #[error(
        "model manifest {manifest}: downloading `{file}` of component `{component}` from {repo}@{revision} failed: \
         {message}; check the network, the repo/revision/file names in the manifest, and HF_TOKEN for gated repos"
    )]
    Download {
        manifest: PathBuf,
        component: ComponentKind,
        file: String,
        repo: String,
        revision: String,
        message: String,
    },

    #[error("model set {manifest}: no component `{component}`; add [components.{component}] to the manifest")]
    ComponentMissing {
        manifest: PathBuf,
        component: ComponentKind,
    },

    #[error(
        "model set {manifest}: component `{component}` has no file matching `{wanted}` (its files: {listed}); \
         add it to the component's `files`"
    )]
    FileNotListed {
        manifest: PathBuf,
        component: ComponentKind,
        wanted: String,
        listed: String,
    },
}
