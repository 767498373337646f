//! Our candle model code: plain modules with `load(VarBuilder, &Config)` and `forward`.
//! No I/O beyond reading tensors handed in, no hub; the only threads are the CPU kernels'
//! (gemm's and our attention's, on the rayon pool candle already uses).

// Reading CPU storage in our custom ops.
mod cpu_storage;
#[cfg(test)]
mod test_support;
// Vectorisable exp/SiLU and the SIMD dispatch our CPU kernels share.
mod fast_math;
// softmax(q kᵀ) v: a fused kernel on the CPU, candle ops elsewhere.
pub mod attention;
// 2-D convolution: our tiled kernel on the CPU, candle's elsewhere.
pub mod conv;
// GroupNorm (+ SiLU) fused on the CPU.
pub mod group_norm;
// SD1.5 UNet with decoupled cross-attention (IP-Adapter) and fused LoRA.
pub mod unet;
// The tensors a model read, kept to rebuild it with a few replaced (user LoRAs).
pub mod recorded_weights;
// User LoRAs (kohya / A1111 .safetensors) merged into the UNet and text encoder weights.
pub mod lora;
// Loading the IP-Adapter file (torch .bin or .safetensors) and fusing its LoRA.
pub mod ip_adapter;
// CLIP BPE tokenizer built from vocab.json + merges.txt (as SD1.5 repos ship it).
pub mod tokenizer;
// SD1.5 text encoder (CLIP ViT-L/14 text tower).
pub mod clip_text;
// CLIP vision towers: ViT-H/14 (FaceID image encoder, hidden_states[-2]) and ViT-L/14 (safety).
pub mod clip_vision;
// FaceID-Plus projection (ProjPlusModel + perceiver resampler, s_scale shortcut).
pub mod face_projection;
// VAE decoder.
pub mod vae;
// The samplers (DDIM, DPM-Solver++, Euler, Euler ancestral, UniPC) behind one trait, each
// configured from scheduler_config.json as diffusers' `from_config` does.
pub mod schedulers;
pub use schedulers::ddim;
// StableDiffusionSafetyChecker head.
pub mod safety_checker;
// Which key prefixes a weights file uses (transformers 4.x and 5.x spell them differently).
pub mod weight_layout;
// CLIPImageProcessor with Pillow-exact resampling (FaceID crop and safety checker inputs).
pub mod clip_preprocess;
