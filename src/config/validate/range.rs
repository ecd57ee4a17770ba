//! `routes[].cache.range_fill_max`: how large an object a range miss fetches whole.

use super::super::file;
use super::Checker;

/// The route's `range_fill_max`: a size, and no larger than the route's
/// `max_object_size` (an object above that could never be stored to answer ranges from).
pub(super) fn range_fill_max(
    c: &mut Checker,
    s: &file::RouteCacheSection,
    path: &str,
    default: u64,
) -> u64 {
    let key = format!("{path}.cache.range_fill_max");
    let value = c.size(&s.range_fill_max, &key, default);
    let Some(given) = &s.range_fill_max else {
        return value;
    };
    let max_object = s
        .max_object_size
        .as_ref()
        .and_then(|m| super::parse_size(m.get_ref()).ok())
        .unwrap_or(crate::config::CachePolicy::default().max_object_size);
    if value > max_object {
        c.report(
            given.span(),
            key,
            format!("{value} bytes is above this route's max_object_size ({max_object} bytes)"),
        );
        c.hint("a range miss could never store such an object: lower range_fill_max or raise max_object_size");
    }
    value
}
