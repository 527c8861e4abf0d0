//! The class → WordNet map on the real WordNet 3.0: every root is a noun synset, the closures have
//! the sizes computed for the plan (docs/plans/irc-language.md §4), and the prompts are filled.

use gyre_data::wordnet::WordNet;
use gyre_text::prompts::{classes_for, PromptSet, CIFAR10, FASHION_MNIST};
use std::path::PathBuf;

fn wordnet() -> WordNet {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../data/wordnet");
    WordNet::read(&d).expect("run `cargo xtask data wordnet`")
}

#[test]
fn class_closures_have_their_sizes_and_prompts_their_texts() {
    let wn = wordnet();
    let sizes = |set: &[gyre_text::prompts::ClassText]| -> Vec<usize> {
        set.iter().map(|c| c.closure(&wn).len()).collect()
    };
    assert_eq!(sizes(&FASHION_MNIST), [11, 27, 5, 21, 54, 7, 9, 2, 66, 10]);
    assert_eq!(sizes(&CIFAR10), [34, 41, 872, 39, 24, 190, 54, 99, 83, 24]);
    for c in FASHION_MNIST.iter().chain(&CIFAR10) {
        for &r in c.roots {
            assert!(
                wn.noun(r).is_some(),
                "{}: {r} is not a noun synset",
                c.class
            );
        }
    }
    let cat = &CIFAR10[3];
    let p = cat.prompts(PromptSet::TemplatesAndGloss, &wn);
    assert_eq!(p.len(), 19);
    assert_eq!(p[0], "a photo of a cat.");
    assert!(p[18].starts_with("cat: feline mammal"), "{}", p[18]);
    assert_eq!(cat.prompts(PromptSet::Gloss, &wn).len(), 1);
    assert_eq!(
        FASHION_MNIST[8].prompts(PromptSet::Templates, &wn)[1],
        "a blurry photo of a bag."
    );
    let names = |s: &[&str]| s.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        classes_for(&names(&gyre_data::fashion_mnist::CLASSES)).unwrap()[0].prompt,
        "T-shirt"
    );
    assert!(classes_for(&names(&gyre_data::cifar::CIFAR10_CLASSES)).is_some());
    assert!(classes_for(&names(&["a", "b"])).is_none());
}
