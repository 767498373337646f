//! The `models/*.toml` format: which files make up a model set and where they come from.
//!
//! ```toml
//! name = "sd15-faceid-plusv2"
//!
//! [sources.base]                 # a hub repo and/or a local folder
//! repo = "SG161222/Realistic_Vision_V4.0_noVAE"
//! revision = "main"              # branch, tag or 40-hex commit (default "main")
//! # local = "/models/rv4"        # tried first; relative paths start at the manifest's folder
//!
//! [components.unet]
//! source = "base"                # or inline repo/revision/local
//! folder = "unet"                # sub-folder inside the repo / local folder
//! files = ["config.json", "diffusion_pytorch_model.safetensors"]
//! ```
//!
//! `[components.checkpoint]` names a single-file SD1.5 checkpoint (one `.safetensors` or `.ckpt`
//! in the original LDM / A1111 layout, see `single_file`); the UNet, VAE and text encoder then
//! list only their `config.json` and take their weights from it. A plain checkpoint path given
//! where a manifest is expected is the default set completed that way (`Manifest::with_checkpoint`).
//!
//! A source or component may carry `licence = "..."`, a notice logged (warn) whenever the set is
//! resolved, e.g. for weights that are not licensed for commercial use.
//!
//! `local` may contain `${VAR}` or `${VAR:-default}` (e.g. a test-asset folder chosen by an
//! environment variable).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::WeightsError;

/// The parts of a FaceID head shot model set. The order is the order of loading and of logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ComponentKind {
    /// A single-file checkpoint in the original LDM / A1111 layout (`single_file`): the weights
    /// of the UNet, VAE and text encoder whose components list no weights file of their own.
    Checkpoint,
    Tokenizer,
    TextEncoder,
    Unet,
    Vae,
    Scheduler,
    ImageEncoder,
    IpAdapter,
    SafetyChecker,
    FeatureExtractor,
    FaceDetector,
    FaceRecognizer,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 12] = [
        ComponentKind::Checkpoint,
        ComponentKind::Tokenizer,
        ComponentKind::TextEncoder,
        ComponentKind::Unet,
        ComponentKind::Vae,
        ComponentKind::Scheduler,
        ComponentKind::ImageEncoder,
        ComponentKind::IpAdapter,
        ComponentKind::SafetyChecker,
        ComponentKind::FeatureExtractor,
        ComponentKind::FaceDetector,
        ComponentKind::FaceRecognizer,
    ];

    /// The key used in `[components.<key>]`.
    pub fn key(self) -> &'static str {
        match self {
            ComponentKind::Checkpoint => "checkpoint",
            ComponentKind::Tokenizer => "tokenizer",
            ComponentKind::TextEncoder => "text_encoder",
            ComponentKind::Unet => "unet",
            ComponentKind::Vae => "vae",
            ComponentKind::Scheduler => "scheduler",
            ComponentKind::ImageEncoder => "image_encoder",
            ComponentKind::IpAdapter => "ip_adapter",
            ComponentKind::SafetyChecker => "safety_checker",
            ComponentKind::FeatureExtractor => "feature_extractor",
            ComponentKind::FaceDetector => "face_detector",
            ComponentKind::FaceRecognizer => "face_recognizer",
        }
    }

    /// The face detector and recognizer (insightface's ONNX pair, not diffusers weights).
    pub fn is_face_model(self) -> bool {
        matches!(
            self,
            ComponentKind::FaceDetector | ComponentKind::FaceRecognizer
        )
    }

    /// The safety checker and its feature extractor.
    pub fn is_safety_model(self) -> bool {
        matches!(
            self,
            ComponentKind::SafetyChecker | ComponentKind::FeatureExtractor
        )
    }

    /// The parts in which SD1.5 fine-tunes differ: what a model set picked by `model_id` loads
    /// of its own. The FaceID parts (face models, image encoder, IP-Adapter) and the safety
    /// checker are the same for all of them and shared.
    pub fn is_base_model(self) -> bool {
        matches!(
            self,
            ComponentKind::Checkpoint
                | ComponentKind::Tokenizer
                | ComponentKind::TextEncoder
                | ComponentKind::Unet
                | ComponentKind::Vae
                | ComponentKind::Scheduler
        )
    }

    /// Every kind but the face models: what resolves from diffusers-layout folders alone.
    pub fn except_face_models() -> Vec<ComponentKind> {
        ComponentKind::ALL
            .into_iter()
            .filter(|k| !k.is_face_model())
            .collect()
    }

    pub fn from_key(key: &str) -> Option<ComponentKind> {
        ComponentKind::ALL.into_iter().find(|k| k.key() == key)
    }

    /// Components the manifest must name. The safety checker and its feature extractor are
    /// optional (a deployment may run without the checker), and so is a checkpoint.
    pub fn is_required(self) -> bool {
        !matches!(
            self,
            ComponentKind::SafetyChecker
                | ComponentKind::FeatureExtractor
                | ComponentKind::Checkpoint
        )
    }

    /// The parts a single-file checkpoint can hold: these may list only their `config.json`.
    pub fn in_checkpoint(self) -> bool {
        matches!(
            self,
            ComponentKind::Unet | ComponentKind::Vae | ComponentKind::TextEncoder
        )
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Where files come from: a hub repo, a local folder, or both (local first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `owner/name` on the Hugging Face Hub.
    pub repo: Option<String>,
    /// Branch, tag or commit; `main` when absent.
    pub revision: Option<String>,
    /// A local folder laid out like the repo.
    pub local: Option<String>,
    /// A licence notice for the weights from this source (logged at start-up).
    pub licence: Option<String>,
}

/// One component as written in the manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Name of a `[sources.<name>]` table. Mutually exclusive with inline `repo`/`local`.
    pub source: Option<String>,
    pub repo: Option<String>,
    pub revision: Option<String>,
    pub local: Option<String>,
    /// Sub-folder inside the repo (and inside the local folder).
    pub folder: Option<String>,
    /// Files of this component, relative to `folder`.
    pub files: Vec<String>,
    /// A licence notice; overrides the source's.
    pub licence: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    description: Option<String>,
    #[serde(default)]
    sources: BTreeMap<String, SourceSpec>,
    components: BTreeMap<String, ComponentSpec>,
}

/// A component with its source looked up: what `resolve` works from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentEntry {
    pub kind: ComponentKind,
    pub repo: Option<String>,
    pub revision: String,
    /// The local folder with `${VAR}` expanded and made absolute (not yet checked to exist).
    pub local: Option<PathBuf>,
    pub folder: Option<String>,
    pub files: Vec<String>,
    /// The component's licence notice, or its source's.
    pub licence: Option<String>,
}

impl ComponentEntry {
    /// The path of `file` inside the repo (`folder/file`).
    pub fn repo_path(&self, file: &str) -> String {
        match &self.folder {
            Some(folder) => format!("{}/{}", folder.trim_end_matches('/'), file),
            None => file.to_string(),
        }
    }
}

/// A parsed, validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: String,
    pub description: Option<String>,
    /// The file it was read from (for messages); `<inline>` when parsed from a string.
    pub path: PathBuf,
    pub components: BTreeMap<ComponentKind, ComponentEntry>,
}

impl Manifest {
    /// Reads and validates `path`. Relative `local` folders are taken from the manifest's folder.
    /// A `.safetensors` / `.ckpt` path is a single-file checkpoint instead: the default model
    /// set with its UNet, VAE and text encoder weights from that file (`with_checkpoint`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Manifest, WeightsError> {
        let path = path.as_ref();
        if is_checkpoint_path(path) {
            return Manifest::default_base()?.with_checkpoint(path);
        }
        let text = std::fs::read_to_string(path).map_err(|source| WeightsError::ManifestRead {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base_dir = std::path::absolute(&base_dir).unwrap_or(base_dir);
        Manifest::parse(&text, path, &base_dir)
    }

    /// Parses manifest text. `path` only names the manifest in messages; relative `local`
    /// folders are joined onto `base_dir`.
    pub fn parse(text: &str, path: &Path, base_dir: &Path) -> Result<Manifest, WeightsError> {
        let invalid = |message: String| WeightsError::ManifestInvalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;

        let mut components = BTreeMap::new();
        for (key, spec) in raw.components {
            let kind = ComponentKind::from_key(&key).ok_or_else(|| {
                let known: Vec<&str> = ComponentKind::ALL.iter().map(|k| k.key()).collect();
                invalid(format!(
                    "unknown component [components.{key}]; known components: {}",
                    known.join(", ")
                ))
            })?;
            let entry = component_entry(kind, spec, &raw.sources, base_dir).map_err(invalid)?;
            components.insert(kind, entry);
        }
        for kind in ComponentKind::ALL {
            if kind.is_required() && !components.contains_key(&kind) {
                return Err(invalid(format!(
                    "missing [components.{kind}]; every model set needs it"
                )));
            }
        }
        check_weight_files(&components).map_err(invalid)?;
        Ok(Manifest {
            name: raw.name,
            description: raw.description,
            path: path.to_path_buf(),
            components,
        })
    }

    /// The default model set (models/sd15-faceid-plusv2.toml, compiled in): the base a plain
    /// checkpoint path completes with tokenizer, configs, scheduler, adapter and face models.
    pub fn default_base() -> Result<Manifest, WeightsError> {
        Manifest::parse(
            DEFAULT_BASE_MANIFEST,
            Path::new("models/sd15-faceid-plusv2.toml (built in)"),
            Path::new("."),
        )
    }

    /// This set with its UNet, VAE and text encoder weights taken from the single-file
    /// checkpoint `checkpoint` (their components keep only `config.json`, so nothing else of
    /// them is fetched). The checkpoint's own VAE is used, as diffusers' `from_single_file` and
    /// A1111 do; a manifest that wants another one lists that VAE's weights file itself.
    pub fn with_checkpoint(mut self, checkpoint: &Path) -> Result<Manifest, WeightsError> {
        let checkpoint =
            std::path::absolute(checkpoint).unwrap_or_else(|_| checkpoint.to_path_buf());
        let invalid = |message: String| WeightsError::ManifestInvalid {
            path: checkpoint.clone(),
            message,
        };
        let (Some(folder), Some(file)) = (checkpoint.parent(), checkpoint.file_name()) else {
            return Err(invalid("not a file path".to_string()));
        };
        for kind in [
            ComponentKind::Unet,
            ComponentKind::Vae,
            ComponentKind::TextEncoder,
        ] {
            let entry = self.components.get_mut(&kind).ok_or_else(|| {
                invalid(format!(
                    "the base set {} has no [components.{kind}]",
                    self.path.display()
                ))
            })?;
            entry.files.retain(|f| f == "config.json");
            if entry.files.is_empty() {
                return Err(invalid(format!(
                    "[components.{kind}] of the base set {} lists no config.json",
                    self.path.display()
                )));
            }
        }
        self.components.insert(
            ComponentKind::Checkpoint,
            ComponentEntry {
                kind: ComponentKind::Checkpoint,
                repo: None,
                revision: "main".to_string(),
                local: Some(folder.to_path_buf()),
                folder: None,
                files: vec![file.to_string_lossy().into_owned()],
                licence: None,
            },
        );
        self.name = checkpoint
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or(self.name);
        self.description = Some(format!(
            "{} with the UNet, VAE and text encoder of {}",
            self.path.display(),
            checkpoint.display()
        ));
        check_weight_files(&self.components).map_err(invalid)?;
        self.path = checkpoint;
        Ok(self)
    }

    pub fn component(&self, kind: ComponentKind) -> Option<&ComponentEntry> {
        self.components.get(&kind)
    }

    /// The shared kinds (not [`ComponentKind::is_base_model`]) this set names differently from
    /// `base`: another repo, revision, folder or file list, or another local folder once both
    /// are made canonical. A set that lists none of a kind agrees with any base.
    pub fn shared_parts_differing_from(&self, base: &Manifest) -> Vec<ComponentKind> {
        self.components
            .iter()
            .filter(|(kind, _)| !kind.is_base_model())
            .filter(|(kind, entry)| {
                base.components
                    .get(kind)
                    .is_none_or(|theirs| !entry.same_source(theirs))
            })
            .map(|(kind, _)| *kind)
            .collect()
    }
}

impl ComponentEntry {
    /// Whether both name the same files: licence notices aside, local folders compared
    /// canonically (`a/../b` and `b` are one folder).
    fn same_source(&self, other: &ComponentEntry) -> bool {
        let canonical = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        };
        self.repo == other.repo
            && self.revision == other.revision
            && self.folder == other.folder
            && self.files == other.files
            && canonical(&self.local) == canonical(&other.local)
    }
}

/// The default model set, for `Manifest::default_base`.
pub const DEFAULT_BASE_MANIFEST: &str = include_str!("../../../models/sd15-faceid-plusv2.toml");

/// Whether `path` names a single-file checkpoint rather than a manifest.
pub fn is_checkpoint_path(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("safetensors") || e.eq_ignore_ascii_case("ckpt"))
}

/// Names a file as model weights (what `ResolvedComponent::weights` picks).
fn is_weights_file(name: &str) -> bool {
    [".safetensors", ".bin", ".pt", ".pth", ".ckpt"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// A checkpoint is one weights file; a UNet, VAE or text encoder without a weights file of its
/// own needs one to take its weights from.
fn check_weight_files(components: &BTreeMap<ComponentKind, ComponentEntry>) -> Result<(), String> {
    let checkpoint = components.get(&ComponentKind::Checkpoint);
    if let Some(entry) = checkpoint {
        let valid = matches!(entry.files.as_slice(), [one] if one.ends_with(".safetensors") || one.ends_with(".ckpt"));
        if !valid {
            return Err(format!(
                "[components.checkpoint] must list exactly one `.safetensors` or `.ckpt` file, not {:?}",
                entry.files
            ));
        }
    }
    for (kind, entry) in components {
        if kind.in_checkpoint()
            && checkpoint.is_none()
            && !entry.files.iter().any(|f| is_weights_file(f))
        {
            return Err(format!(
                "[components.{kind}] lists no weights file and there is no [components.checkpoint] to take them from; \
                 add its `.safetensors` to `files` or add a checkpoint"
            ));
        }
    }
    Ok(())
}

fn component_entry(
    kind: ComponentKind,
    spec: ComponentSpec,
    sources: &BTreeMap<String, SourceSpec>,
    base_dir: &Path,
) -> Result<ComponentEntry, String> {
    let inline = spec.repo.is_some() || spec.local.is_some() || spec.revision.is_some();
    let source = match &spec.source {
        Some(name) if inline => {
            return Err(format!(
                "[components.{kind}] names source \"{name}\" and also repo/revision/local; use one of the two"
            ))
        }
        Some(name) => sources.get(name).cloned().ok_or_else(|| {
            format!("[components.{kind}] names source \"{name}\", but there is no [sources.{name}]")
        })?,
        None => SourceSpec {
            repo: spec.repo,
            revision: spec.revision,
            local: spec.local,
            licence: None,
        },
    };
    if source.repo.is_none() && source.local.is_none() {
        return Err(format!(
            "[components.{kind}] has neither a repo nor a local folder; set `repo = \"owner/name\"` or `local = \"path\"`"
        ));
    }
    if let Some(repo) = &source.repo {
        let mut parts = repo.split('/');
        let valid = matches!((parts.next(), parts.next(), parts.next()), (Some(o), Some(n), None) if !o.is_empty() && !n.is_empty());
        if !valid {
            return Err(format!(
                "[components.{kind}] repo \"{repo}\" is not of the form \"owner/name\""
            ));
        }
    }
    if spec.files.is_empty() {
        return Err(format!(
            "[components.{kind}] lists no files; add `files = [...]`"
        ));
    }
    for file in &spec.files {
        let escapes = Path::new(file)
            .components()
            .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if file.is_empty() || escapes {
            return Err(format!(
                "[components.{kind}] file \"{file}\" must be a relative path inside the folder (no '..', no leading '/')"
            ));
        }
    }
    let local = match &source.local {
        Some(raw) => {
            let expanded =
                expand_env(raw).map_err(|e| format!("[components.{kind}] local: {e}"))?;
            Some(base_dir.join(expanded))
        }
        None => None,
    };
    Ok(ComponentEntry {
        kind,
        repo: source.repo,
        revision: source.revision.unwrap_or_else(|| "main".to_string()),
        local,
        folder: spec.folder.filter(|f| !f.is_empty()),
        files: spec.files,
        licence: spec.licence.or(source.licence),
    })
}

/// Expands `${VAR}` and `${VAR:-default}`. An unset `${VAR}` without default is an error, so a
/// typo does not silently point at the wrong folder.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed \"${{\" in \"{text}\""))?;
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expr, None),
        };
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (used in \"{text}\"); set it or write ${{{name}:-default}}"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
[sources.base]
repo = "owner/base"
[components.tokenizer]
source = "base"
folder = "tokenizer"
files = ["vocab.json", "merges.txt"]
[components.text_encoder]
source = "base"
folder = "text_encoder"
files = ["config.json", "model.safetensors"]
[components.unet]
source = "base"
folder = "unet"
files = ["config.json", "diffusion_pytorch_model.safetensors"]
[components.vae]
repo = "owner/vae"
revision = "0123456789abcdef0123456789abcdef01234567"
files = ["config.json", "diffusion_pytorch_model.safetensors"]
[components.scheduler]
source = "base"
folder = "scheduler"
files = ["scheduler_config.json"]
[components.image_encoder]
local = "enc"
files = ["config.json", "model.safetensors"]
[components.ip_adapter]
repo = "owner/adapter"
files = ["adapter.bin"]
[components.face_detector]
local = "faces"
files = ["det.onnx"]
[components.face_recognizer]
local = "faces"
files = ["rec.onnx"]
"#;

    fn parse(text: &str) -> Result<Manifest, WeightsError> {
        Manifest::parse(text, Path::new("test.toml"), Path::new("/base"))
    }

    #[test]
    fn parses_sources_inline_repos_and_local_folders() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.name, "t");
        let unet = m.component(ComponentKind::Unet).unwrap();
        assert_eq!(unet.repo.as_deref(), Some("owner/base"));
        assert_eq!(unet.revision, "main");
        assert_eq!(unet.repo_path("config.json"), "unet/config.json");
        let vae = m.component(ComponentKind::Vae).unwrap();
        assert_eq!(vae.revision, "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(vae.repo_path("config.json"), "config.json");
        let enc = m.component(ComponentKind::ImageEncoder).unwrap();
        assert_eq!(enc.local.as_deref(), Some(Path::new("/base/enc")));
        assert!(m.component(ComponentKind::SafetyChecker).is_none());
    }

    #[test]
    fn missing_required_component_is_named() {
        let text = MINIMAL.replace("[components.unet]", "[components.unused_unet_typo]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("unknown component [components.unused_unet_typo]"),
            "{err}"
        );
        let text = MINIMAL.replace(
            "[components.unet]\nsource = \"base\"\nfolder = \"unet\"\nfiles = [\"config.json\", \"diffusion_pytorch_model.safetensors\"]\n",
            "",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("missing [components.unet]"), "{err}");
        assert!(err.contains("test.toml"), "{err}");
    }

    #[test]
    fn rejects_bad_sources_and_paths() {
        let err = parse(&MINIMAL.replace(
            "source = \"base\"\nfolder = \"unet\"",
            "source = \"nope\"\nfolder = \"unet\"",
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("no [sources.nope]"), "{err}");
        let err = parse(&MINIMAL.replace("\"adapter.bin\"", "\"../adapter.bin\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("relative path inside the folder"), "{err}");
        let err = parse(&MINIMAL.replace("repo = \"owner/adapter\"", "repo = \"adapter\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("owner/name"), "{err}");
        let err = parse(&MINIMAL.replace("files = [\"adapter.bin\"]", "files = []"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lists no files"), "{err}");
    }

    const UNET_WEIGHTS: &str =
        "files = [\"config.json\", \"diffusion_pytorch_model.safetensors\"]\n[components.vae]";

    #[test]
    fn a_checkpoint_supplies_the_weights_components_leave_out() {
        let config_only =
            MINIMAL.replace(UNET_WEIGHTS, "files = [\"config.json\"]\n[components.vae]");
        let err = parse(&config_only).unwrap_err().to_string();
        assert!(
            err.contains("[components.unet] lists no weights file")
                && err.contains("[components.checkpoint]"),
            "{err}"
        );
        let with_checkpoint = format!(
            "{config_only}[components.checkpoint]\nlocal = \"ckpts\"\nfiles = [\"rv51.safetensors\"]\n"
        );
        let m = parse(&with_checkpoint).unwrap();
        let ckpt = m.component(ComponentKind::Checkpoint).unwrap();
        assert_eq!(ckpt.local.as_deref(), Some(Path::new("/base/ckpts")));
        assert_eq!(
            m.component(ComponentKind::Unet).unwrap().files,
            ["config.json"]
        );

        let two =
            with_checkpoint.replace("[\"rv51.safetensors\"]", "[\"a.safetensors\", \"b.ckpt\"]");
        let err = parse(&two).unwrap_err().to_string();
        assert!(
            err.contains("exactly one `.safetensors` or `.ckpt`"),
            "{err}"
        );
    }

    #[test]
    fn a_checkpoint_path_completes_the_default_set() {
        let m = Manifest::from_file("/ckpts/realisticVision_v51.safetensors").unwrap();
        assert_eq!(m.name, "realisticVision_v51");
        let ckpt = m.component(ComponentKind::Checkpoint).unwrap();
        assert_eq!(ckpt.local.as_deref(), Some(Path::new("/ckpts")));
        assert_eq!(ckpt.files, ["realisticVision_v51.safetensors"]);
        for kind in [
            ComponentKind::Unet,
            ComponentKind::Vae,
            ComponentKind::TextEncoder,
        ] {
            assert_eq!(m.component(kind).unwrap().files, ["config.json"], "{kind}");
        }
        // The rest is the default set's, from the hub.
        let tokenizer = m.component(ComponentKind::Tokenizer).unwrap();
        assert_eq!(
            tokenizer.repo.as_deref(),
            Some("SG161222/Realistic_Vision_V4.0_noVAE")
        );
        assert!(m.component(ComponentKind::IpAdapter).is_some());
        assert!(
            is_checkpoint_path(Path::new("x.CKPT")) && !is_checkpoint_path(Path::new("x.toml"))
        );
    }

    #[test]
    fn expands_environment_variables_with_defaults() {
        std::env::set_var("HEADSHOT_WEIGHTS_TEST_DIR", "/from/env");
        assert_eq!(
            expand_env("${HEADSHOT_WEIGHTS_TEST_DIR}/x").unwrap(),
            "/from/env/x"
        );
        assert_eq!(
            expand_env("${HEADSHOT_WEIGHTS_TEST_UNSET_VAR:-../assets}/y").unwrap(),
            "../assets/y"
        );
        assert!(expand_env("${HEADSHOT_WEIGHTS_TEST_UNSET_VAR}/y")
            .unwrap_err()
            .contains("HEADSHOT_WEIGHTS_TEST_UNSET_VAR"));
        assert!(expand_env("${OOPS").is_err());
    }
}
