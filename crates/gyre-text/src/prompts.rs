//! Class prompts for zero-shot scoring and the class → WordNet map that scores auto-paired texts
//! (evaluation only: no prompt, class name or synset is ever used in training).
//!
//! The templates are CLIP's CIFAR-10 ensemble (openai/CLIP, `data/prompts.md`, MIT licence).
//! CLIP has no Fashion-MNIST prompts; gyre uses the same 18 for it.

use gyre_data::wordnet::WordNet;
use std::collections::HashSet;

/// CLIP's 18 CIFAR-10 templates.
pub const CLIP_TEMPLATES: [&str; 18] = [
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
];

/// One class of a dataset: its name in the dataset, the name its prompts use, and the WordNet
/// noun synsets (offsets) whose hyponym closures are its texts, minus the closures of `minus`.
#[derive(Debug, Clone, Copy)]
pub struct ClassText {
    pub class: &'static str,
    pub prompt: &'static str,
    pub roots: &'static [u32],
    pub minus: &'static [u32],
}

const fn c(
    class: &'static str,
    prompt: &'static str,
    roots: &'static [u32],
    minus: &'static [u32],
) -> ClassText {
    ClassText {
        class,
        prompt,
        roots,
        minus,
    }
}

/// Fashion-MNIST (gyre's choice of names and synsets; WordNet has no "ankle boot": boot).
pub const FASHION_MNIST: [ClassText; 10] = [
    c("T-shirt/top", "T-shirt", &[3_595_614, 4_453_666], &[]),
    c("Trouser", "trouser", &[4_489_008], &[]),
    c("Pullover", "pullover", &[4_370_048], &[]),
    c("Dress", "dress", &[3_236_735], &[]),
    c("Coat", "coat", &[3_057_021], &[]),
    c("Sandal", "sandal", &[4_133_789], &[]),
    c("Shirt", "shirt", &[4_197_391], &[3_595_614]),
    c("Sneaker", "sneaker", &[3_472_535], &[]),
    c("Bag", "bag", &[2_773_037, 2_774_152], &[]),
    c("Ankle boot", "ankle boot", &[2_872_752], &[]),
];

/// CIFAR-10 (CLIP's class names).
pub const CIFAR10: [ClassText; 10] = [
    c("airplane", "airplane", &[2_691_156], &[]),
    c("automobile", "automobile", &[2_958_343], &[]),
    c("bird", "bird", &[1_503_061], &[]),
    c("cat", "cat", &[2_121_620], &[]),
    c("deer", "deer", &[2_430_045], &[]),
    c("dog", "dog", &[2_084_071], &[]),
    c("frog", "frog", &[1_639_765], &[]),
    c("horse", "horse", &[2_374_451], &[]),
    c("ship", "ship", &[4_194_289], &[]),
    c("truck", "truck", &[4_490_091], &[]),
];

/// The class texts of a dataset whose class names are `classes` (Fashion-MNIST's or CIFAR-10's,
/// in their order).
pub fn classes_for(classes: &[String]) -> Option<&'static [ClassText]> {
    [&FASHION_MNIST[..], &CIFAR10[..]].into_iter().find(|set| {
        set.len() == classes.len() && set.iter().zip(classes).all(|(c, n)| c.class == n)
    })
}

/// Which texts stand for a class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSet {
    /// The 18 templates and the roots' "lemma: gloss" (the ensemble).
    TemplatesAndGloss,
    Templates,
    Gloss,
}

impl PromptSet {
    pub fn name(self) -> &'static str {
        match self {
            PromptSet::TemplatesAndGloss => "templates+gloss",
            PromptSet::Templates => "templates",
            PromptSet::Gloss => "gloss",
        }
    }
}

impl ClassText {
    /// The class's prompts (`wn` gives the glosses).
    pub fn prompts(&self, set: PromptSet, wn: &WordNet) -> Vec<String> {
        let mut v = Vec::new();
        if set != PromptSet::Gloss {
            v.extend(CLIP_TEMPLATES.iter().map(|t| t.replace("{}", self.prompt)));
        }
        if set != PromptSet::Templates {
            v.extend(
                self.roots
                    .iter()
                    .filter_map(|&o| wn.noun(o))
                    .map(|s| s.text()),
            );
        }
        v
    }

    /// The synsets that count as this class: the roots' hyponym closures minus `minus`'s.
    pub fn closure(&self, wn: &WordNet) -> HashSet<u32> {
        let mut s: HashSet<u32> = self
            .roots
            .iter()
            .flat_map(|&r| wn.hyponym_closure(r))
            .collect();
        for &m in self.minus {
            for o in wn.hyponym_closure(m) {
                s.remove(&o);
            }
        }
        s
    }
}
