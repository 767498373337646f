//! Facts of the documented wire format that several crates' tests check against.

/// The keys of `meta` in every answer that carries one, sorted.
pub const META_KEYS: [&str; 15] = [
    "base64",
    "face_image",
    "file_prefix",
    "guidance_scale",
    "height",
    "negative_prompt",
    "num_inference_steps",
    "outdir",
    "prompt",
    "safety_checker",
    "safety_checker_type",
    "samples",
    "seed",
    "temp",
    "width",
];

/// The request example of `head_shot_endpoint.txt`, byte for byte except the face image URL.
pub fn documented_example(face_image_url: &str) -> String {
    r#"{
"key": "",
"prompt": "pretty woman",
"negative_prompt": "anime, cartoon, drawing, big nose, long nose, fat, ugly, big lips, big mouth, face proportion mismatch, unrealistic, monochrome, lowres, bad anatomy, worst quality, low quality, blurry",
"face_image":"FACE_URL",
"width": "512",
"height": "512",
"samples": "1",
"num_inference_steps": "21",
"safety_checker": false,
"base64": false,
"seed": null,
"guidance_scale": 7.5,
"webhook": null,
"track_id": null
}"#
    .replace("FACE_URL", face_image_url)
}

/// The face image URL of the documented example.
pub const DOCUMENTED_FACE_IMAGE: &str = "https://media.allure.com/photos/647f876463cd1ef47aab9c88/3:2/w_2465,h_1643,c_limit/angelina%20jolie%20blonde%20hair%20chloe.jpg";
