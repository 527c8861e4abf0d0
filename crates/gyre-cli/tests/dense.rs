//! `gyre eval --dense`: the dense protocols through the binary, on the embedded data (and the
//! real ground truth `scripts/test.sh` fetches), and its bad input.

mod common;

use common::*;
use std::path::Path;

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn raw_pixel_baseline_scores_scenes_and_the_real_ground_truth() {
    let dir = tmp("dense-raw");
    let gt = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/dense-gt");
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--clips",
            "3",
            "--dense-gt",
            gt.to_str().unwrap(),
        ],
        &dir,
    );
    let rows = json_lines(&out);
    let kinds: Vec<&str> = rows
        .iter()
        .map(|r| r["data"].as_str().unwrap_or("propagation"))
        .collect();
    assert_eq!(
        kinds,
        [
            "scenes, frames 1 apart",
            "scenes, frames 4 apart",
            "propagation",
            "middlebury-aloe",
            "middlebury-motorcycle",
            "oxford-graffiti-1-3"
        ]
    );
    for r in &rows {
        if let Some(pck) = r["pck"].as_array() {
            let v: Vec<f64> = pck.iter().map(|p| p.as_f64().unwrap()).collect();
            assert!(
                v.windows(2).all(|w| w[0] <= w[1]),
                "PCK grows with the threshold: {r}"
            );
            assert!(
                v.iter().all(|p| (0.0..=1.0).contains(p)) && r["points"].as_u64().unwrap() > 100,
                "{r}"
            );
        }
    }
    let j = &rows[2];
    for key in [
        "j_mean",
        "j_first_mask_kept",
        "j_true_masks_through_the_grid",
    ] {
        let v = j[key].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&v), "{key}: {j}");
    }
    assert!(j["objects"].as_u64().unwrap() >= 6);
    // The same clips, the same numbers.
    let again = json_lines(&gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--clips",
            "3",
        ],
        &dir,
    ));
    assert_eq!(again[0]["pck"], rows[0]["pck"]);
    assert_eq!(again[2]["j_mean"], rows[2]["j_mean"]);
}

#[test]
fn bad_dense_eval_input_is_a_one_line_error() {
    let dir = tmp("dense-bad");
    let out = gyre(&["eval", "--dense", "--baseline", "nope"], &dir);
    assert_clean_error(&out, "--baseline nope: expected raw-pixels or random-init");
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--scenes-from",
            "/no/such/folder",
        ],
        &dir,
    );
    assert_clean_error(&out, "/no/such/folder");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "raw-pixels",
            "--clips",
            "1",
            "--dense-gt",
            empty.to_str().unwrap(),
        ],
        &dir,
    );
    assert_clean_error(&out, "cargo xtask data dense-gt");
    let out = gyre(
        &[
            "eval",
            "--dense",
            "--baseline",
            "random-init",
            "--arch",
            "resnet7",
            "--clips",
            "1",
        ],
        &dir,
    );
    assert_clean_error(&out, "resnet7");
}
