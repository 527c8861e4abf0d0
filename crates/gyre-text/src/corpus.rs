//! Unpaired text corpora: WordNet 3.0's glosses ("lemma: gloss", one per synset) or any file or
//! folder of text lines. A corpus is keyed by the sha256 of its ids and texts, never its path.

use crate::error::TextError;
use gyre_data::wordnet::WordNet;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Texts with stable ids (`n02691156` for WordNet, `file.txt:12` for a folder).
#[derive(Clone, Debug)]
pub struct Corpus {
    ids: Vec<String>,
    texts: Vec<String>,
    key: String,
}

impl Corpus {
    /// A corpus of `(id, text)` pairs, in order.
    pub fn new(ids: Vec<String>, texts: Vec<String>) -> Result<Corpus, TextError> {
        assert_eq!(ids.len(), texts.len(), "one id per text");
        if texts.is_empty() {
            return Err(TextError::Setting {
                field: "text.corpus",
                problem: "the corpus has no texts".into(),
            });
        }
        let mut h = Sha256::new();
        for (id, t) in ids.iter().zip(&texts) {
            h.update(id.as_bytes());
            h.update([0]);
            h.update(t.as_bytes());
            h.update([b'\n']);
        }
        let key = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(Corpus { ids, texts, key })
    }

    /// WordNet's 117,659 synsets in file order (nouns, verbs, adjectives, adverbs), each
    /// `"lemma: gloss"`.
    pub fn wordnet(dir: &Path) -> Result<Corpus, TextError> {
        let wn = WordNet::read(dir).map_err(|e| TextError::Model(e.to_string()))?;
        Corpus::from_wordnet(&wn)
    }

    /// The corpus of an already read WordNet.
    pub fn from_wordnet(wn: &WordNet) -> Result<Corpus, TextError> {
        let (ids, texts) = wn.synsets.iter().map(|s| (s.id(), s.text())).unzip();
        Corpus::new(ids, texts)
    }

    /// One text per non-empty line (trimmed) of a file, or of every `*.txt` file of a folder in
    /// name order; ids are `file:line`.
    pub fn from_path(path: &Path) -> Result<Corpus, TextError> {
        let files = if path.is_dir() {
            let mut f: Vec<_> = std::fs::read_dir(path)
                .map_err(|e| TextError::file(path, format!("cannot list: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "txt"))
                .collect();
            f.sort();
            f
        } else if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            return Err(TextError::file(path, "text.corpus: no such file or folder"));
        };
        let (mut ids, mut texts) = (Vec::new(), Vec::new());
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| TextError::file(f, format!("{e}")))?;
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
                let line = std::str::from_utf8(line)
                    .map_err(|_| TextError::file(f, format!("line {}: not UTF-8", i + 1)))?;
                let line = line.trim();
                if !line.is_empty() {
                    ids.push(format!("{name}:{}", i + 1));
                    texts.push(line.to_string());
                }
            }
        }
        if texts.is_empty() {
            return Err(TextError::file(
                path,
                "text.corpus: no texts (no non-empty line in any .txt file)",
            ));
        }
        Corpus::new(ids, texts)
    }

    /// `n` texts spread evenly over the corpus (every `len/n`-th), for small runs; the whole
    /// corpus when `n ≥ len`.
    pub fn spread(&self, n: usize) -> Result<Corpus, TextError> {
        let len = self.len();
        if n >= len {
            return Ok(self.clone());
        }
        let pick: Vec<usize> = (0..n).map(|i| i * len / n).collect();
        Corpus::new(
            pick.iter().map(|&i| self.ids[i].clone()).collect(),
            pick.iter().map(|&i| self.texts[i].clone()).collect(),
        )
    }

    pub fn len(&self) -> usize {
        self.texts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty()
    }

    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    pub fn texts(&self) -> &[String] {
        &self.texts
    }

    /// sha256 (hex) of the ids and texts: the corpus's identity in caches and checkpoints.
    pub fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("gyre-corpus-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_folder_gives_its_lines_in_file_order_and_the_key_ignores_the_path() {
        let d = tmp("folder");
        std::fs::write(d.join("b.txt"), "third\n").unwrap();
        std::fs::write(d.join("a.txt"), "  first \n\n second\n").unwrap();
        std::fs::write(d.join("skip.md"), "not a text file\n").unwrap();
        let c = Corpus::from_path(&d).unwrap();
        assert_eq!(c.texts(), ["first", "second", "third"]);
        assert_eq!(c.ids(), ["a.txt:1", "a.txt:3", "b.txt:1"]);
        let moved = tmp("moved");
        for f in ["a.txt", "b.txt"] {
            std::fs::copy(d.join(f), moved.join(f)).unwrap();
        }
        assert_eq!(Corpus::from_path(&moved).unwrap().key(), c.key());
        let one = Corpus::from_path(&d.join("a.txt")).unwrap();
        assert_eq!(one.len(), 2);
        assert_ne!(one.key(), c.key());
        assert_eq!(c.spread(2).unwrap().texts(), ["first", "second"]);
        assert_eq!(c.spread(9).unwrap().len(), 3);
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&moved).unwrap();
    }

    #[test]
    fn empty_and_non_utf8_corpora_are_named() {
        let d = tmp("bad");
        std::fs::write(d.join("a.txt"), "\n   \n").unwrap();
        let e = Corpus::from_path(&d).unwrap_err().to_string();
        assert!(e.contains("text.corpus: no texts"), "{e}");
        std::fs::write(d.join("a.txt"), b"ok\n\xff\xfe\n").unwrap();
        let e = Corpus::from_path(&d).unwrap_err().to_string();
        assert!(e.ends_with("a.txt: line 2: not UTF-8"), "{e}");
        let e = Corpus::from_path(&d.join("none")).unwrap_err().to_string();
        assert!(
            e.ends_with("none: text.corpus: no such file or folder"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
