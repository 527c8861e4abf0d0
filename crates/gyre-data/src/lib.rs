//! Data for gyre: datasets of u8 images, augmentations, multi-view pipelines (strong and weak),
//! a counter-based RNG keyed on (seed, epoch, index, view), and parallel, prefetched batching.
//!
//! Determinism is the rule: every random draw for a sample comes from its own RNG stream, so the
//! same seed gives the same batches bit for bit whatever the thread count or prefetch depth.

pub mod augment;
pub mod bad_sample;
pub mod cifar;
pub mod dataset;
pub mod dense_gt;
pub mod error;
pub mod fashion_mnist;
pub mod idx;
pub mod image_folder;
pub mod jpeg;
pub mod loader;
pub mod rng;
pub mod scenes;
pub mod text_assets;
pub mod video;
pub mod wordnet;

pub use augment::{AugmentConfig, ViewGeometry, ViewPipeline};
pub use bad_sample::{BadSamples, LoadReport, OnBadSample};
pub use dataset::{ImageSet, LazySource};
pub use error::DataError;
pub use image_folder::{load_image_folder, load_train_test_folders, FolderOptions, Residency};
pub use loader::{Batch, ClipDraws, Loader, LoaderConfig, Sampling};
pub use rng::SampleRng;
