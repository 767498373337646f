//! The two sizes of the random model set: SD1.5 + FaceID-PlusV2 + ViT-H/14 + the CompVis safety
//! checker at their real configs, and the narrow "tiny" one of tests/fixtures/tiny.

/// Every width, depth and count the tensor shapes and configs depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// Text hidden size = UNet cross_attention_dim = id-token width.
    pub cross_dim: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_ffn: usize,
    pub unet_channels: [usize; 4],
    /// SD1.5's `attention_head_dim` (read by diffusers as the head count).
    pub unet_heads: usize,
    pub unet_groups: usize,
    pub vae_channels: [usize; 4],
    pub vae_groups: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_ffn: usize,
    pub vision_proj: usize,
    pub lora_rank: usize,
    pub safety_hidden: usize,
    pub safety_layers: usize,
    pub safety_heads: usize,
    pub safety_ffn: usize,
    pub safety_proj: usize,
}

/// Kept at the real values in both sizes (diffusers hard-codes or derives them).
pub const VOCAB: usize = 49408;
pub const TEXT_POSITIONS: usize = 77;
pub const ID_DIM: usize = 512;
pub const NUM_ID_TOKENS: usize = 4;
pub const PERCEIVER_DIM_HEAD: usize = 64;
pub const PERCEIVER_DEPTH: usize = 4;
pub const IMAGE_SIZE: usize = 224;
pub const PATCH: usize = 14;
pub const CONCEPTS: usize = 17;
pub const SPECIAL_CONCEPTS: usize = 3;

impl Dims {
    /// SD1.5 (Realistic Vision V4.0 / sd-vae-ft-mse), IP-Adapter FaceID-PlusV2 (LoRA rank 128),
    /// the ViT-H/14 image encoder and the CompVis safety checker (ViT-L/14).
    pub const FULL: Dims = Dims {
        cross_dim: 768,
        text_layers: 12,
        text_heads: 12,
        text_ffn: 3072,
        unet_channels: [320, 640, 1280, 1280],
        unet_heads: 8,
        unet_groups: 32,
        vae_channels: [128, 256, 512, 512],
        vae_groups: 32,
        vision_hidden: 1280,
        vision_layers: 32,
        vision_heads: 16,
        vision_ffn: 5120,
        vision_proj: 1024,
        lora_rank: 128,
        safety_hidden: 1024,
        safety_layers: 24,
        safety_heads: 16,
        safety_ffn: 4096,
        safety_proj: 768,
    };

    /// tools/fixtures/gen_models.py's dimensions (tests/fixtures/tiny).
    pub const TINY: Dims = Dims {
        cross_dim: 64,
        text_layers: 3,
        text_heads: 4,
        text_ffn: 256,
        unet_channels: [16, 32, 48, 48],
        unet_heads: 4,
        unet_groups: 8,
        vae_channels: [8, 16, 24, 24],
        vae_groups: 4,
        vision_hidden: 96,
        vision_layers: 3,
        vision_heads: 6,
        vision_ffn: 384,
        vision_proj: 48,
        lora_rank: 4,
        safety_hidden: 32,
        safety_layers: 2,
        safety_heads: 4,
        safety_ffn: 128,
        safety_proj: 16,
    };

    pub fn num_positions(&self) -> usize {
        (IMAGE_SIZE / PATCH).pow(2) + 1
    }
}
