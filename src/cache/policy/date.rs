//! HTTP dates (RFC 9110 §5.6.7): all three formats, case-insensitively.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const LONG_DAYS: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// Parses an HTTP-date: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete
/// RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`, a two-digit year more than 50 years
/// ahead meaning the previous century) and asctime (`Sun Nov  6 08:49:37 1994`). Names
/// are matched case-insensitively and surrounding whitespace is ignored; the weekday is
/// checked to be a weekday name, not against the date. `None` for anything else.
pub fn parse_http_date(text: &str) -> Option<SystemTime> {
    let text = text.trim();
    if let Some((year, month, day, h, m, s)) = imf_fixdate(text.as_bytes()) {
        return to_time(year, month, day, h, m, s);
    }
    parse_any(text)
}

/// `parse_http_date` for every form, by splitting the lowercased text into words.
fn parse_any(text: &str) -> Option<SystemTime> {
    let lower = text.to_ascii_lowercase();
    let parts: Vec<&str> = lower.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (year, month, day, time) = match parts.as_slice() {
        [wd, day, mon, year, time, "gmt"] if DAYS.contains(wd) && lower.contains(',') => {
            (number(year, 4, 4)?, month(mon)?, number(day, 2, 2)?, *time)
        }
        [wd, dmy, time, "gmt"] if LONG_DAYS.contains(wd) && lower.contains(',') => {
            let mut it = dmy.split('-');
            let (day, mon, yy) = (it.next()?, it.next()?, it.next()?);
            if it.next().is_some() {
                return None;
            }
            (
                two_digit_year(number(yy, 2, 2)?),
                month(mon)?,
                number(day, 2, 2)?,
                *time,
            )
        }
        [wd, mon, day, time, year] if DAYS.contains(wd) && !lower.contains(',') => {
            (number(year, 4, 4)?, month(mon)?, number(day, 1, 2)?, *time)
        }
        _ => return None,
    };
    let mut hms = time.split(':');
    let (h, m, s) = (hms.next()?, hms.next()?, hms.next()?);
    if hms.next().is_some() {
        return None;
    }
    let (h, m, s) = (number(h, 2, 2)?, number(m, 2, 2)?, number(s, 2, 2)?);
    to_time(year, month, day, h, m, s)
}

/// The fields of an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, what servers send),
/// read at their fixed places with no allocation; `None` for any other form (the
/// general parser then decides).
fn imf_fixdate(b: &[u8]) -> Option<(u32, u32, u32, u32, u32, u32)> {
    if b.len() != 29
        || b[3] != b','
        || [4, 7, 11, 16, 25].iter().any(|&i| b[i] != b' ')
        || b[19] != b':'
        || b[22] != b':'
        || !b[26..].eq_ignore_ascii_case(b"gmt")
    {
        return None;
    }
    let lower = |s: &[u8]| [s[0], s[1], s[2]].map(|c| c.to_ascii_lowercase());
    let wd = lower(&b[..3]);
    if !DAYS.iter().any(|d| d.as_bytes() == wd) {
        return None;
    }
    let mon = lower(&b[8..11]);
    let month = MONTHS.iter().position(|m| m.as_bytes() == mon)? as u32 + 1;
    let digits = |s: &[u8]| {
        s.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    Some((
        digits(&b[12..16])?,
        month,
        digits(&b[5..7])?,
        digits(&b[17..19])?,
        digits(&b[20..22])?,
        digits(&b[23..25])?,
    ))
}

/// The time of a calendar date and time of day, if they are valid.
fn to_time(year: u32, month: u32, day: u32, h: u32, m: u32, s: u32) -> Option<SystemTime> {
    if h > 23 || m > 59 || s > 60 || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + i64::from(h * 3600 + m * 60 + s.min(59));
    if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    }
}

fn number(s: &str, min: usize, max: usize) -> Option<u32> {
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month(s: &str) -> Option<u32> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

/// RFC 9110 §5.6.7: a two-digit year that looks more than 50 years ahead is in the past.
fn two_digit_year(yy: u32) -> u32 {
    let now_year = current_year();
    let century = now_year / 100 * 100;
    let year = century + yy;
    if year > now_year + 50 {
        year - 100
    } else {
        year
    }
}

fn current_year() -> u32 {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    // 365.2425 days a year is exact enough to name the year (off only around new year,
    // which moves the 50-year boundary by one year at most).
    (1970 + days * 10_000 / 3_652_425) as u32
}

fn is_leap(y: u32) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
fn days_from_civil(y: u32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_imf_fixdate_fast_path_agrees_with_the_general_parser() {
        assert_eq!(
            imf_fixdate(b"Sun, 06 Nov 1994 08:49:37 GMT"),
            Some((1994, 11, 6, 8, 49, 37))
        );
        assert_eq!(imf_fixdate(b"Sunday, 06-Nov-94 08:49:37 GMT"), None);
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "sun, 06 nov 1994 08:49:37 gmt",
            "SAT, 29 FEB 2020 23:59:60 GMT",
            "Sat, 29 Feb 2021 00:00:00 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sun, 0a Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Thu, 01 Jan 1970 00:00:00 GMT",
            "Mon, 01 Jan 1900 00:00:00 GMT",
        ] {
            // The fast path reads every 29-byte one; the general parser is the reference.
            assert_eq!(parse_http_date(text), parse_any(text), "{text}");
        }
    }

    const T: u64 = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT

    fn at(secs: u64) -> Option<SystemTime> {
        Some(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn rfc9110_5_6_7_three_formats() {
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), at(T));
        assert_eq!(parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"), at(T));
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), at(T));
    }

    #[test]
    fn rfc9110_5_6_7_case_insensitive_and_trimmed() {
        assert_eq!(parse_http_date("  sun, 06 NOV 1994 08:49:37 gmt "), at(T));
        assert_eq!(parse_http_date("SUNDAY, 06-nov-94 08:49:37 Gmt"), at(T));
        assert_eq!(parse_http_date("sUN nOV 6 08:49:37 1994"), at(T));
    }

    #[test]
    fn rfc9110_5_6_7_anything_else_is_none() {
        for bad in [
            "0",
            "-1",
            "",
            "tomorrow",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 6 Nov 94 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "1994-11-06T08:49:37Z",
        ] {
            assert_eq!(parse_http_date(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn agrees_with_httpdate_for_imf_fixdate() {
        for secs in [
            0u64,
            951_782_400,
            1_700_000_000,
            4_102_444_800,
            253_402_300_799,
        ] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(
                parse_http_date(&httpdate::fmt_http_date(t)),
                Some(t),
                "{secs}"
            );
        }
    }

    #[test]
    fn two_digit_years_are_never_far_in_the_future() {
        let y = current_year();
        assert!(two_digit_year((y + 49) % 100) >= y);
        assert!(two_digit_year((y + 51) % 100) < y);
    }
}
