//! Storage tiers holding [`CachedObject`](super::object::CachedObject)s: memory, disk, and
//! the shared tier on Redis/Valkey.
pub mod disk;
pub mod memory;
mod redis_client;
pub mod shared;
