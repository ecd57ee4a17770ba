//! The HTTP cache: stored objects and their memory and disk tiers.
pub mod object;
pub mod tier;
