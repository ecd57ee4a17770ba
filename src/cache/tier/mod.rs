//! Storage tiers holding [`CachedObject`](super::object::CachedObject)s: memory and disk.
pub mod disk;
pub mod memory;
