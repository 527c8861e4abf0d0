//! The text side of gyre (IRC's language level): a frozen sentence encoder loaded from a Hugging
//! Face Hub model (all-MiniLM-L6-v2 through candle-transformers' BERT and `tokenizers`), unpaired
//! text corpora (WordNet glosses, any folder of text lines) and their cached embeddings.

pub mod error;
pub mod model;

pub use error::TextError;
pub use model::{Embedded, TextModel, TextSpec};
