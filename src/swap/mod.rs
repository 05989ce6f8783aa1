//! The pure core: what each image becomes under a maps file (maps.md). No
//! I/O, no async, no locks: `reference` splits an image, `maps` parses the
//! file, `replace` compiles the globs, `engine` decides (and `mirrors`
//! lists the registries its values name), `lint` finds what
//! `maps check` reports beyond parsing.

pub mod engine;
pub mod lint;
pub mod maps;
pub mod mirrors;
pub mod platform;
pub mod reference;
pub mod replace;

pub use engine::{Decision, Engine, EngineMode, Rule};
pub use maps::{Finding, FindingKind, MapsFile, Severity};
pub use mirrors::MirrorHosts;
pub use reference::ImageRef;
