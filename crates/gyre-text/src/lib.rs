//! The text side of gyre (IRC's language level): a frozen sentence encoder loaded from a Hugging
//! Face Hub model (all-MiniLM-L6-v2 through candle-transformers' BERT and `tokenizers`), unpaired
//! text corpora (WordNet glosses, any folder of text lines) and their cached embeddings.

pub mod bert_tail;
pub mod cache;
pub mod corpus;
pub mod error;
pub mod model;
pub mod prompts;

pub use cache::{corpus_embeddings, Batching, CacheMeta, CacheOutcome, CorpusEmbeddings};
pub use corpus::Corpus;
pub use error::TextError;
pub use model::{pool, Embedded, Hidden, TextModel, TextSpec};
