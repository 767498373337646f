//! Model sets for headshot-server: manifests in `models/*.toml` name every file a head shot
//! pipeline needs (SD1.5 parts, VAE, CLIP image encoder, IP-Adapter, safety checker, face
//! models), and `resolve` finds each file: the component's local folder first, then the
//! Hugging Face cache (offline), then a hub download (feature `download`, not under
//! `HF_HUB_OFFLINE=1`). This is the only crate that touches the file system or the hub for models.
//! `single_file` reads SD1.5 checkpoints in the original LDM / A1111 layout and serves their
//! UNet, VAE and text encoder tensors under the names our models ask for.

pub mod cache;
mod download;
pub mod error;
pub mod manifest;
pub mod resolve;
pub mod single_file;

pub use error::WeightsError;
pub use manifest::{
    expand_env, ComponentEntry, ComponentKind, ComponentSpec, Manifest, SourceSpec,
};
pub use resolve::{
    resolve, resolve_manifest_file, FileOrigin, ResolveOptions, ResolvedComponent, ResolvedFile,
    ResolvedModelSet,
};

/// Whether this build can download from the hub (the `download` feature).
pub const CAN_DOWNLOAD: bool = download::AVAILABLE;
