//! The real WordNet 3.0 of `data/wordnet` (`cargo xtask data wordnet`, which `scripts/test.sh`
//! runs): synset counts, one corpus text, hyponym closures (the class map's scoring sets), and a
//! corrupted copy named by its line.

use gyre_data::wordnet::{WordNet, FILES};
use std::path::PathBuf;

fn dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/wordnet");
    assert!(
        d.join("data.noun").is_file(),
        "{} has no WordNet: run `cargo xtask data wordnet`",
        d.display()
    );
    d
}

#[test]
fn reads_every_synset_of_wordnet_3() {
    let wn = WordNet::read(&dir()).unwrap();
    let count = |p: &[char]| wn.synsets.iter().filter(|s| p.contains(&s.pos)).count();
    assert_eq!(count(&['n']), 82_115);
    assert_eq!(count(&['v']), 13_767);
    assert_eq!(count(&['a', 's']), 18_156);
    assert_eq!(count(&['r']), 3_621);
    assert_eq!(wn.synsets.len(), 117_659);
    let plane = wn.noun(2_691_156).unwrap();
    assert_eq!(plane.id(), "n02691156");
    assert_eq!(
        plane.text(),
        "airplane: an aircraft that has a fixed wing and is powered by propellers or jets; \"the \
         flight was delayed due to trouble with the airplane\""
    );
    // Every id is unique within the corpus.
    let ids: std::collections::HashSet<String> = wn.synsets.iter().map(|s| s.id()).collect();
    assert_eq!(ids.len(), 117_659);
}

#[test]
fn hyponym_closures_match_the_class_map() {
    let wn = WordNet::read(&dir()).unwrap();
    assert_eq!(wn.hyponym_closure(2_691_156).len(), 34); // airplane
    assert_eq!(wn.hyponym_closure(1_503_061).len(), 872); // bird
    assert!(wn.hyponym_closure(2_691_156).contains(&2_691_156));
    assert!(wn.hyponym_closure(1).is_empty(), "not a synset");
}

#[test]
fn a_changed_byte_is_named_by_its_line() {
    let tmp = std::env::temp_dir().join(format!("gyre-wordnet-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for (name, _) in FILES {
        std::fs::copy(dir().join(name), tmp.join(name)).unwrap();
    }
    // Delete one byte of the gloss on line 100 of data.adv: every later offset is off by one.
    let path = tmp.join("data.adv");
    let mut bytes = std::fs::read(&path).unwrap();
    let line_start: usize = bytes
        .split_inclusive(|&b| b == b'\n')
        .take(99)
        .map(<[u8]>::len)
        .sum();
    let bar = line_start
        + bytes[line_start..]
            .windows(3)
            .position(|w| w == b" | ")
            .unwrap();
    bytes.remove(bar + 4);
    std::fs::write(&path, &bytes).unwrap();
    let e = WordNet::read(&tmp).unwrap_err().to_string();
    std::fs::remove_dir_all(&tmp).unwrap();
    assert!(e.contains("data.adv: line 101: synset offset"), "{e}");
}
