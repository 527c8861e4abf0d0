//! WordNet 3.0's database files (Debian `wordnet-base` 1:3.0-37, `cargo xtask data wordnet`):
//! every synset's lemmas, gloss and hyponym links. IRC's language level walks through its glosses
//! as an unpaired text corpus, and its hyponym closures score auto-paired texts against a class
//! (never a training signal).
//!
//! Format (`wndb(5WN)`): after 29 licence lines that start with two spaces, one synset per line:
//! `offset lex_filenum ss_type w_cnt(hex) {word lex_id(hex)}… p_cnt {symbol offset pos src/tgt}…
//! [frames] | gloss`. A synset's offset is its line's byte position in the file, which the reader
//! checks: a changed byte earlier in the file shows as a named line.

use crate::error::DataError;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// The four data files and their sha256 in `wordnet-base` 1:3.0-37 (checked by `cargo xtask data
/// wordnet`), in the corpus order.
pub const FILES: [(&str, &str); 4] = [
    (
        "data.noun",
        "fea17d2f9656611334eac790e5d69e47645fa180c4aa481fb4cd9b3520754ca2",
    ),
    (
        "data.verb",
        "adcf43e35b581e8036d8b5a52d63d9cd3d3b4870b2720d3c03c799df44777bc2",
    ),
    (
        "data.adj",
        "c89120dfc1f046ddff4a631bf9b7e9fa1a36b5e86565a23bf82dbe14f30b88a7",
    ),
    (
        "data.adv",
        "444a63bf3955080ab7524f5079cfc07ff9bc682cb98bdb1db73b0fb9829f1139",
    ),
];

/// The Debian package and version the files come from.
pub const DEBIAN_PACKAGE: (&str, &str) = ("wordnet-base", "1:3.0-37");

/// One synset.
#[derive(Clone, Debug, PartialEq)]
pub struct Synset {
    /// `n`, `v`, `a` (adjective), `s` (adjective satellite) or `r` (adverb).
    pub pos: char,
    /// Byte offset of its line in its file; with the file's part of speech, its identity.
    pub offset: u32,
    /// Its words, in WordNet's order, with `_` for spaces as in the files.
    pub lemmas: Vec<String>,
    /// Offsets of its direct hyponyms and instance hyponyms (`~`, `~i`; nouns only).
    pub hyponyms: Vec<u32>,
    pub gloss: String,
}

impl Synset {
    /// WordNet's usual id: the file's part of speech and the 8-digit offset (`n02691156`).
    pub fn id(&self) -> String {
        let pos = if self.pos == 's' { 'a' } else { self.pos };
        format!("{pos}{:08}", self.offset)
    }

    /// The corpus text: `"first lemma: gloss"`, underscores as spaces
    /// (`"airplane: an aircraft that has a fixed wing and is powered by propellers or jets"`).
    pub fn text(&self) -> String {
        let lemma = self.lemmas.first().map(String::as_str).unwrap_or("");
        format!("{}: {}", lemma.replace('_', " "), self.gloss)
    }
}

/// The whole database: the synsets of the four files, in file order (nouns, verbs, adjectives,
/// adverbs), and the noun index for hyponym closures.
#[derive(Debug)]
pub struct WordNet {
    pub synsets: Vec<Synset>,
    nouns: HashMap<u32, usize>,
}

impl WordNet {
    /// Reads `data.noun`, `data.verb`, `data.adj` and `data.adv` from `dir`.
    pub fn read(dir: &Path) -> Result<WordNet, DataError> {
        let mut synsets = Vec::new();
        for (name, _) in FILES {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| {
                DataError::file(
                    &path,
                    format!("cannot read ({e}); run `cargo xtask data wordnet`"),
                )
            })?;
            parse_file(&path, &bytes, &mut synsets)?;
        }
        let nouns = synsets
            .iter()
            .enumerate()
            .filter(|(_, s)| s.pos == 'n')
            .map(|(i, s)| (s.offset, i))
            .collect();
        Ok(WordNet { synsets, nouns })
    }

    /// The noun synset at `offset`, if any.
    pub fn noun(&self, offset: u32) -> Option<&Synset> {
        self.nouns.get(&offset).map(|&i| &self.synsets[i])
    }

    /// The noun synset at `offset` and every synset below it through hyponym and instance-hyponym
    /// links (transitively). Empty when `offset` is not a noun synset.
    pub fn hyponym_closure(&self, offset: u32) -> HashSet<u32> {
        let mut seen = HashSet::new();
        if self.noun(offset).is_none() {
            return seen;
        }
        let mut stack = vec![offset];
        while let Some(o) = stack.pop() {
            if !seen.insert(o) {
                continue;
            }
            if let Some(s) = self.noun(o) {
                stack.extend(s.hyponyms.iter().copied().filter(|h| !seen.contains(h)));
            }
        }
        seen
    }
}

/// The default folder: `$GYRE_DATA_DIR/wordnet` or `data/wordnet` (where `cargo xtask data
/// wordnet` puts the files).
pub fn default_dir() -> PathBuf {
    std::env::var_os("GYRE_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
        .join("wordnet")
}

fn parse_file(path: &Path, bytes: &[u8], out: &mut Vec<Synset>) -> Result<(), DataError> {
    let mut pos_in_file = 0usize;
    for (n, raw) in bytes.split_inclusive(|&b| b == b'\n').enumerate() {
        let start = pos_in_file;
        pos_in_file += raw.len();
        if raw.starts_with(b"  ") {
            continue; // the licence
        }
        let bad = |problem: String| DataError::file(path, format!("line {}: {problem}", n + 1));
        let line = std::str::from_utf8(raw)
            .map_err(|_| bad("not UTF-8".into()))?
            .trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        let synset = parse_line(line).map_err(bad)?;
        if synset.offset as usize != start {
            return Err(bad(format!(
                "synset offset {:08} is not the line's byte position {start} (a changed or \
                 missing byte before it)",
                synset.offset
            )));
        }
        out.push(synset);
    }
    Ok(())
}

fn parse_line(line: &str) -> Result<Synset, String> {
    let (head, gloss) = line
        .split_once(" | ")
        .ok_or_else(|| "no ' | ' before the gloss".to_string())?;
    let mut f = head.split_ascii_whitespace();
    let mut next = |what: &str| f.next().ok_or_else(|| format!("ends before its {what}"));
    let offset: u32 = next("offset")?
        .parse()
        .map_err(|_| "offset is not a number".to_string())?;
    next("lex_filenum")?;
    let pos = match next("ss_type")? {
        t @ ("n" | "v" | "a" | "s" | "r") => t.chars().next().expect("one char"),
        t => return Err(format!("unknown ss_type '{t}'")),
    };
    let w_cnt = usize::from_str_radix(next("w_cnt")?, 16)
        .map_err(|_| "w_cnt is not hexadecimal".to_string())?;
    let mut lemmas = Vec::with_capacity(w_cnt);
    for _ in 0..w_cnt {
        let word = next("word")?;
        next("lex_id")?;
        // Adjective position markers: `galore(ip)`, `elect(p)`, `former(a)`.
        let word = word
            .strip_suffix("(ip)")
            .or_else(|| word.strip_suffix("(p)"))
            .or_else(|| word.strip_suffix("(a)"))
            .unwrap_or(word);
        lemmas.push(word.to_string());
    }
    let p_cnt: usize = next("p_cnt")?
        .parse()
        .map_err(|_| "p_cnt is not a number".to_string())?;
    let mut hyponyms = Vec::new();
    for _ in 0..p_cnt {
        let symbol = next("pointer symbol")?;
        let target: u32 = next("pointer offset")?
            .parse()
            .map_err(|_| "pointer offset is not a number".to_string())?;
        let target_pos = next("pointer pos")?;
        next("pointer source/target")?;
        if pos == 'n' && target_pos == "n" && (symbol == "~" || symbol == "~i") {
            hyponyms.push(target);
        }
    }
    Ok(Synset {
        pos,
        offset,
        lemmas,
        hyponyms,
        gloss: gloss.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_noun_line_with_its_hyponyms_and_a_marked_adjective() {
        let s = parse_line(
            "02691156 06 n 03 airplane 0 aeroplane 0 plane 1 003 @ 03510583 n 0000 ~ 02690373 n \
             0000 ~i 09999999 n 0000 | an aircraft that has a fixed wing  ",
        )
        .unwrap();
        assert_eq!(s.id(), "n02691156");
        assert_eq!(s.lemmas, ["airplane", "aeroplane", "plane"]);
        assert_eq!(s.hyponyms, [2690373, 9999999]);
        assert_eq!(s.text(), "airplane: an aircraft that has a fixed wing");
        let a = parse_line("00001740 00 s 02 galore(ip) 0 in_abundance 0 000 | abundant").unwrap();
        assert_eq!((a.pos, a.id().as_str()), ('s', "a00001740"));
        assert_eq!(a.lemmas, ["galore", "in_abundance"]);
        assert_eq!(a.text(), "galore: abundant");
        // w_cnt is hexadecimal: 0a = ten words.
        let many: String = (0..10).map(|i| format!("w{i} 0 ")).collect();
        let l = format!("00000000 00 n 0a {many}000 | g");
        assert_eq!(parse_line(&l).unwrap().lemmas.len(), 10);
    }

    #[test]
    fn a_bad_line_is_named() {
        for (line, want) in [
            ("00000000 00 n 01 x 0 000 gloss", "no ' | '"),
            ("00000000 00 q 01 x 0 000 | g", "unknown ss_type 'q'"),
            ("00000000 00 n 01 x | g", "ends before its lex_id"),
            ("00000000 00 n 02 x 0 | g", "ends before its word"),
            ("00000000 00 n 0z x 0 000 | g", "w_cnt is not hexadecimal"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn the_offset_must_be_the_byte_position() {
        let good = b"  licence line\n00000015 00 n 01 x 0 000 | g\n";
        let mut v = Vec::new();
        parse_file(Path::new("data.noun"), good, &mut v).unwrap();
        assert_eq!(v[0].offset, 15);
        let shifted = b"  licence line!\n00000015 00 n 01 x 0 000 | g\n";
        let e = parse_file(Path::new("data.noun"), shifted, &mut v).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "data.noun: line 2: synset offset 00000015 is not the line's byte position 16"
            ),
            "{e}"
        );
    }
}
